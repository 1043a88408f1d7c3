"""The dispatcher as a process of its own (docs/delivery.md#the-dispatcher-process): lead, drain, stop gracefully."""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
from typing import Callable

from config import Config
from delivery.dispatcher import Dispatcher, LeaderLock, lock_path_for

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter
MALLOC_ARENAS = 2
# How far below the web workers the dispatcher runs (POSTBACK_DISPATCHER_NICE): a request waits for CPU behind a
# drain otherwise, and a delivery can wait out a burst where an answer to a form or a bot cannot.
NICENESS = 5
STOP_MARGIN = 5.0  # seconds past timeout_seconds a stop waits: the last request's answer, then its outcomes written


def stop_timeout(config: Config) -> float:
    """How long a stop waits for the request in flight: it times out by then, so its outcomes are recorded."""
    return config.timeout_seconds + STOP_MARGIN


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let glibc's malloc keep at most `arenas` arenas, whatever the threads (it makes up to 8 per core): each
    drain thread would otherwise free its claims into an arena of its own, and the process grows with every
    thread that ever drained. Elsewhere than glibc, nothing changes. Whether the cap was set."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas) == 1
    except (OSError, AttributeError):
        return False


def lower_priority(environ=os.environ) -> int:
    """Run this process `NICENESS` (or POSTBACK_DISPATCHER_NICE) steps below its parent's scheduling priority, so
    the web workers' requests get the CPU first while both want it; when they are idle the drain has it all.
    Returns the process's niceness now."""
    try:
        steps = int(environ.get("POSTBACK_DISPATCHER_NICE", NICENESS))
    except ValueError:
        steps = NICENESS
    return os.nice(max(0, steps))  # raising it needs no privilege; lowering it would


def lock_problem(config: Config) -> str | None:
    """Why the leader lock beside the database cannot be opened, or None (PostgreSQL has no lock file)."""
    path = lock_path_for(config.database)
    if path is None:
        return None
    try:
        with open(path, "a+"):
            return None
    except OSError as exc:
        return f"cannot open the dispatcher's lock file {path}: {exc.strerror}"


def run(config_source: Callable[[], Config], parent: int | None = None, stop: threading.Event | None = None) -> int:
    """Drain every interval until SIGTERM/SIGINT (or `stop`, or the death of process `parent`); returns the exit code.

    Only the holder of the leader lock beside a SQLite database drains, so a box has one active dispatcher;
    on PostgreSQL there is no lock and every node may run one.
    """
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, lambda *_: stop.set())
    config = config_source()
    lock = LeaderLock(lock_path_for(config.database))
    if not _lead(lock, config, stop, parent):
        return 0
    cap_malloc_arenas()  # before the drain threads start: an arena, once made, stays
    dispatcher = Dispatcher(config_source)
    scheduler = dispatcher.schedule()
    log.info("dispatcher started", extra={"pid": os.getpid(), "interval_seconds": config.interval_seconds})
    try:
        while not stop.wait(1.0):
            if _orphaned(parent):
                log.warning("dispatcher stopping: the process that started it is gone")
                break
    finally:
        dispatcher.stop_claiming()
        scheduler.shutdown(wait=True)  # its job only starts drains: this returns at once, and nothing is scheduled after
        handed_back = dispatcher.stop(stop_timeout(config_source()))
        lock.release()
        log.info("dispatcher stopped", extra={"handed_back": handed_back})
    return 0


def _lead(lock: LeaderLock, config: Config, stop: threading.Event, parent: int | None) -> bool:
    """Wait until this process holds the leader lock; False if told to stop first."""
    said = False
    while not lock.acquire():
        if not said:
            log.info("dispatcher waiting: another one drains this database", extra={"lock": lock.path})
            said = True
        if stop.wait(config.interval_seconds) or _orphaned(parent):
            return False
    return True


def _orphaned(parent: int | None) -> bool:
    return parent is not None and os.getppid() != parent
