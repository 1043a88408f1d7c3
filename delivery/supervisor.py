"""Keep one child process running (gunicorn's master keeps the dispatcher): start it, start it again when it
dies, stop it with SIGTERM and a bounded wait."""
from __future__ import annotations

import logging
import os
import subprocess
import threading
import time

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0
MAX_DELAY = 60.0
POLL = 0.5
STEADY = 60.0  # a child that ran this long before dying is restarted after the first delay again


class Supervisor:
    """Runs `command` on a watcher thread, restarting it after a delay that doubles while it keeps dying young."""

    def __init__(self, command: list[str], stop_wait: float, name: str = "dispatcher"):
        self.command, self.stop_wait, self.name = command, stop_wait, name
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # A fork in another thread (gunicorn's master forking a worker) while Popen waits for its child's exec would
        # give that worker the end of the pipe Popen waits on, and Popen would wait until the worker exits: forks
        # and spawns take turns.
        self._spawning = threading.Lock()
        os.register_at_fork(before=self._spawning.acquire, after_in_parent=self._spawning.release,
                            after_in_child=self._spawning.release)
        self._child: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._watch, name=f"{name}-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def restart(self) -> None:
        """Stop the child gracefully; the watcher starts a new one (a reload reads the config again)."""
        with self._lock:
            child = self._child
        if child is not None:
            self._terminate(child)

    def stop(self) -> int | None:
        """SIGTERM, wait up to `stop_wait`, then SIGKILL; the child's exit code (negative: killed by that signal)."""
        self._stopping.set()
        with self._lock:
            child = self._child
        code = self._terminate(child) if child is not None else None
        self._thread.join(timeout=self.stop_wait)
        return code

    def _terminate(self, child: subprocess.Popen) -> int:
        child.terminate()
        try:
            return child.wait(timeout=self.stop_wait)
        except subprocess.TimeoutExpired:
            log.error(f"{self.name} did not stop within {self.stop_wait:g} s: killed", extra={"pid": child.pid})
            child.kill()
            return child.wait()

    def _watch(self) -> None:
        delay = FIRST_DELAY
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                with self._spawning:
                    self._child = subprocess.Popen(self.command)
            begun = time.monotonic()
            # Polled, not waited for: gunicorn's master reaps every child it is told of (SIGCHLD), ours too, and a
            # blocking wait on a child reaped elsewhere may never return. Its exit code is then lost (0).
            while self._child.poll() is None:
                self._stopping.wait(POLL)
            lived = time.monotonic() - begun
            if self._stopping.is_set():
                return
            delay = FIRST_DELAY if lived >= STEADY else delay
            log.warning(f"{self.name} exited; starting it again in {delay:g} s",
                        extra={"exit_code": self._child.returncode, "pid": self._child.pid})
            if self._stopping.wait(delay):
                return
            delay = min(MAX_DELAY, delay * 2)

