"""`make bench`: does Postback meet its speed targets on this box? One run, one Markdown table of verdicts.

Every ratio is measured against a bare server in the same run, Postback and bare ALTERNATING (Postback, bare,
Postback, bare, ...), and is the median of the pairs' ratios (BENCH_PAIRS pairs, at least 5 by default):

1. Ingest: wrk POSTs a ~650-byte purchase (a new event_id and order_id per request, bench/track.lua) at 16
   connections to Postback under gunicorn.conf.py (what `make run` uses: the dispatcher runs in its own process
   beside the workers) and to bench/bare.py (only parses the JSON) under the same gunicorn settings. Two row sets:
   the example config as is (five destinations in dry mode: payloads built and stored, nothing sent), and the same
   five destinations `live`, each toward a lean fake of its platform in a process of its own
   (bench/fake_platforms.py), so the dispatcher's real work (HTTP included) runs during ingest. After each
   Postback run the bench waits for the backlog to empty; that drain's CPU counts toward Postback's CPU per
   request.
2. Pixel: wrk GETs the PitchTarget pixel (`/<pixel_token>/revenue.gif?...`, routes/pixel.py) against a bare
   route answering the same GIF (bench/bare.py).
3. Dispatch: BENCH_EVENTS events stored straight into a fresh database (one through the real parse and
   models.record_event, the rest copied in SQL), then drained by a Dispatcher in this process to the fake
   Meta alone, to each other fake alone, and to all five together; timed from the first claim to the last
   recorded outcome.
4. Footprint: peak RSS (VmHWM) of every Postback process (gunicorn master, each worker, the dispatcher), and
   database bytes per event after VACUUM (free pages and the empty schema's pages not counted; file + WAL after a
   checkpoint is shown beside).
   BENCH_MILLION=1 adds a long run of 1,000,000 events (BENCH_MILLION=<n> for n events) that says whether each
   process's RSS stays flat (±10 %); about 25 minutes on 2 cores (~700 events/s, each chunk's backlog emptied).

Knobs (environment): BENCH_PAIRS (5), BENCH_SECONDS (6), BENCH_CONNECTIONS (16), BENCH_WRK_THREADS (2),
BENCH_WRK_TIMEOUT ("5s"), BENCH_WARMUP_SECONDS (2), BENCH_EVENTS (10000), BENCH_DISPATCH_RUNS (= BENCH_PAIRS),
BENCH_DRAIN_WAIT (60, seconds the backlog left by a run may go without shrinking), BENCH_MILLION (off),
BENCH_CHUNK_SECONDS (60, the long run's wrk runs), BENCH_OUT (bench/out/last.md), BENCH_KEEP=1 (keep the temp folder). About 6
minutes by default on 2 cores; quick mode, under a minute:
    BENCH_PAIRS=1 BENCH_SECONDS=2 BENCH_EVENTS=2000 make bench

A missed target is a finding: exit 0, with the measured reason under the table. Exit 1 only when no figure can
be trusted: a non-2xx answer, a socket error, a lost or duplicated event, a process that died.
"""
from __future__ import annotations

import base64
import copy
import json
import os
import platform
import re
import runpy
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

API_KEY = "key_demo_123"
TOKEN = "bench-secret-token"
USER_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
CLIENT_IP = "203.0.113.7"
PLATFORMS = ("meta", "tiktok", "snapchat", "google_ads", "ga4")
# A realistic purchase from a shop's server: ChannelStack's documented example's fields, with well-formed click ids.
PURCHASE = {
    "api_key": API_KEY,
    "event": "purchase_completed",
    "event_id": "@ID@",
    "order_id": "ord-@ID@",
    "email": "john.doe@example.com",
    "phone": "+15551234567",
    "distinct_id": "user_123",
    "first_name": "John",
    "last_name": "Doe",
    "city": "San Francisco",
    "state": "CA",
    "zip": "94102",
    "country": "US",
    "value": 149.99,
    "currency": "USD",
    "gclid": "CjwKCAjw4ZWkBhA4EiwA",
    "fbc": "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB",
    "fbp": "fb.1.1554763741205.1098115397",
    "source_url": "https://shop.example/checkout",
    "consent": True,
    "items": [{"id": "sku_1", "quantity": 1, "price": 99.99}, {"id": "sku_2", "quantity": 2, "price": 25}],
    "coupon_used": "SAVE20",
}
# The pixel's documented revenue call with an email in `params`; without a cookie each call is a new visitor and
# a new event id (dialects/pixel/parse.py).
PIXEL_PARAMS = {"email": "john.doe@example.com", "page": "checkout.html"}
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
DISPATCHER_STARTED = re.compile(r'"message": "dispatcher started"')  # its modules imported, its drains scheduled
MIB = 1024 * 1024


class BenchError(Exception):
    """The bench cannot report a trustworthy figure: it stops, loudly."""


# ---------------------------------------------------------------- settings and pure helpers


@dataclass(frozen=True)
class Settings:
    pairs: int = 5
    seconds: int = 6
    connections: int = 16
    wrk_threads: int = 2
    wrk_timeout: str = "5s"
    warmup_seconds: int = 2
    events: int = 10_000
    dispatch_runs: int = 5
    drain_wait: float = 60.0
    million: int = 0  # events of the long RSS run; 0 = not run
    chunk_seconds: int = 60
    out: Path = BENCH / "out" / "last.md"
    keep: bool = False

    @classmethod
    def from_env(cls, env) -> "Settings":
        def number(name: str, default, kind=int, minimum=0):
            text = env.get(name, "").strip()
            if not text:
                return default
            try:
                value = kind(text)
            except ValueError:
                raise BenchError(f"{name}={text!r}: not a number") from None
            if value < minimum:
                raise BenchError(f"{name}={text!r}: must be at least {minimum}")
            return value

        pairs = number("BENCH_PAIRS", 5, minimum=1)
        million = number("BENCH_MILLION", 0)
        return cls(
            pairs=pairs,
            seconds=number("BENCH_SECONDS", 6, minimum=1),
            connections=number("BENCH_CONNECTIONS", 16, minimum=1),
            wrk_threads=number("BENCH_WRK_THREADS", 2, minimum=1),
            wrk_timeout=env.get("BENCH_WRK_TIMEOUT", "").strip() or "5s",
            warmup_seconds=number("BENCH_WARMUP_SECONDS", 2),
            events=number("BENCH_EVENTS", 10_000, minimum=1),
            dispatch_runs=number("BENCH_DISPATCH_RUNS", pairs, minimum=1),
            drain_wait=number("BENCH_DRAIN_WAIT", 60.0, float),
            million=1_000_000 if million == 1 else million,
            chunk_seconds=number("BENCH_CHUNK_SECONDS", 60, minimum=1),
            out=Path(env.get("BENCH_OUT") or BENCH / "out" / "last.md"),
            keep=env.get("BENCH_KEEP", "") not in ("", "0"),
        )


def parse_wrk(output: str) -> dict[str, int]:
    """The numbers from the `BENCH key=value ...` line that bench/track.lua's (and pixel.lua's) done() prints."""
    for line in output.splitlines():
        if line.startswith("BENCH "):
            try:
                return {key: int(float(value)) for key, value in (item.split("=", 1) for item in line[6:].split())}
            except ValueError:
                raise BenchError(f"unreadable wrk summary line: {line!r}") from None
    raise BenchError("wrk printed no BENCH line (did the Lua script load?):\n" + output[-2000:])


def wrk_errors(numbers: dict[str, int]) -> dict[str, int]:
    """Every kind of failure wrk counted; wrk itself exits 0 even when every response is an error."""
    kinds = ("non2xx", "connect", "read", "write", "timeout")
    return {kind: numbers[kind] for kind in kinds if numbers.get(kind, 0)}


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    if not values:
        raise BenchError("no measurement to summarize")
    return statistics.median(values), min(values), max(values)


def pair_ratios(postback: list[float], bare: list[float]) -> list[float]:
    """Each pair's Postback ÷ bare, in run order: the pairs were run back to back, so drifting load hits both."""
    if len(postback) != len(bare) or not postback:
        raise BenchError(f"unpaired runs: {len(postback)} Postback, {len(bare)} bare")
    return [p / b for p, b in zip(postback, bare)]


def verdict(value: float, goal: float, higher_is_better: bool) -> str:
    """`met` or `MISSED`; the goal itself meets it."""
    return "met" if (value >= goal if higher_is_better else value <= goal) else "MISSED"


def bar(value: float, goal: float, higher_is_better: bool, width: int = 10) -> str:
    """A text bar scaled to the goal: full when the goal is met, else the share of the way to it
    (measured ÷ goal for a floor, goal ÷ measured for a ceiling)."""
    if value <= 0:
        share = 0.0 if higher_is_better else 1.0
    else:
        share = value / goal if higher_is_better else goal / value
    filled = max(0, min(width, int(share * width + 1e-9)))
    return "█" * filled + "░" * (width - filled)


def figure(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "s":
        return f"{value:.1f} s"
    if abs(value) >= 100:
        return f"{value:,.0f}{' ' + unit if unit else ''}"
    return f"{value:.1f}{' ' + unit if unit else ''}"


def duration(seconds: float) -> str:
    """`45 s`, `12 min`, `1 h 05 min`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def measured(values: list[float], unit: str) -> str:
    """`median (min–max, n)`; a single value alone."""
    median, low, high = spread(values)
    if len(values) == 1:
        return f"{figure(median, unit)} (1 run)"
    return f"{figure(median, unit)} ({figure(low, unit)}–{figure(high, unit)}, {len(values)} runs)"


@dataclass
class Target:
    """One judged row: the measured values (their median is judged), the goal and which side of it is good."""
    name: str
    values: list[float]
    unit: str
    goal: float
    higher_is_better: bool
    reason: str = ""  # the measured reason, said under the table when missed
    not_run: str = ""  # why there is no figure

    @property
    def verdict(self) -> str:
        if self.not_run:
            return "not run"
        return verdict(statistics.median(self.values), self.goal, self.higher_is_better)

    def row(self) -> str:
        goal = f"{'≥' if self.higher_is_better else '≤'} {figure(self.goal, self.unit)}"
        if self.not_run:
            return f"| {self.name} | not run: {self.not_run} | {goal} | not run | |"
        median = statistics.median(self.values)
        return (f"| {self.name} | {measured(self.values, self.unit)} | {goal} | {self.verdict} | "
                f"`{bar(median, self.goal, self.higher_is_better)}` |")


def pixel_path(token: str) -> str:
    """The pixel call wrk repeats: the documented revenue call with an email in base64 `params`."""
    params = base64.b64encode(json.dumps(PIXEL_PARAMS, separators=(",", ":")).encode()).decode()
    return f"/{token}/revenue.gif?event_token=purchase&amount=2500&params={params}"


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def box_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole box so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def children(pid: int) -> list[int]:
    """The live child processes of pid (gunicorn's workers and dispatcher, for its master), whichever of its threads
    started them (the master's supervisor thread starts the dispatcher)."""
    try:
        return [int(p) for task in Path(f"/proc/{pid}/task").iterdir() for p in (task / "children").read_text().split()]
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if int(text[text.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_dispatcher(pid: int) -> bool:
    """Whether pid is the dispatcher process gunicorn's master keeps (`cli.py dispatch`)."""
    try:
        return b"dispatch" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status, e.g. VmHWM (peak resident set) or VmRSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- processes


class Proc:
    """A child in a process group of its own, so stop() also takes down whatever it started."""

    live: list["Proc"] = []

    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None, pipes: bool = False):
        self.name, self.log_path = name, log
        self._log = open(log, "wb")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, start_new_session=True,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else self._log, stderr=self._log,
            text=pipes or None,
        )
        Proc.live.append(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait4(self) -> tuple[int, float]:
        """Wait for the exit; (exit code, CPU seconds it and its waited-for children used)."""
        _, status, usage = os.wait4(self.popen.pid, 0)
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        self._forget()
        return self.popen.returncode, usage.ru_utime + usage.ru_stime

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait()
        self._signal(signal.SIGKILL)  # anything of the group that outlived its leader
        self._forget()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _forget(self) -> None:
        if self in Proc.live:
            Proc.live.remove(self)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        for proc in reversed(list(cls.live)):
            proc.stop()


def gunicorn_settings() -> dict:
    """What gunicorn.conf.py resolves to in this environment (reported, and the workers to expect)."""
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return {key: conf.get(key) for key in ("worker_class", "workers", "threads", "keepalive", "accesslog")}


class Server:
    """gunicorn with a config file, on 127.0.0.1 and a port the OS picks (PORT=0)."""

    def __init__(self, name: str, conf: Path, env: dict, log: Path, workers: int, dispatcher: bool = False):
        self.name, self.workers, self.has_dispatcher = name, workers, dispatcher
        # `python -m gunicorn` with this interpreter: a venv made without console scripts has no gunicorn binary.
        self.proc = Proc(name, [sys.executable, "-m", "gunicorn", "-c", str(conf)], log,
                         env={**env, "HOST": "127.0.0.1", "PORT": "0"})
        self.url: str | None = None
        self.peak_kib: dict[int, int] = {}  # pid -> VmHWM
        self.roles: dict[int, str] = {}  # pid -> master | worker | dispatcher
        self.expected: set[int] = set()
        self.start_mib: dict[int, float] = {}  # pid -> RSS once ready, before any request

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited with {self.proc.popen.returncode}:\n{self.proc.log_tail()}")
            if self.url is None and (match := LISTENING.search(self.proc.log_tail(100_000))):
                self.url = f"http://127.0.0.1:{match[1]}"
            if (self.url and len(self.worker_pids()) >= self.workers
                    and (not self.has_dispatcher or self.dispatcher_pid() and self._dispatcher_started())
                    and self._healthy()):
                self.expected = {self.proc.pid, *children(self.proc.pid)}
                self.roles = {pid: self.role(pid) for pid in self.expected}
                self.start_mib = self.rss_mib()
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name}: not ready within {timeout:g} s:\n{self.proc.log_tail()}")

    def _dispatcher_started(self) -> bool:
        """Its "RSS once ready" is read after its imports, not in the middle of them."""
        return DISPATCHER_STARTED.search(self.proc.log_tail(100_000)) is not None

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def role(self, pid: int) -> str:
        return "master" if pid == self.proc.pid else "dispatcher" if is_dispatcher(pid) else "worker"

    def worker_pids(self) -> list[int]:
        """The master's children but the dispatcher process: the request workers."""
        return [pid for pid in children(self.proc.pid) if not is_dispatcher(pid)]

    def dispatcher_pid(self) -> int | None:
        return next((pid for pid in children(self.proc.pid) if is_dispatcher(pid)), None)

    def check_alive(self) -> None:
        """The same master, workers and dispatcher as at start: one that died (and was restarted) fails the bench."""
        if self.proc.popen.poll() is not None:
            raise BenchError(f"{self.name}: gunicorn died (exit {self.proc.popen.returncode}):\n{self.proc.log_tail()}")
        now = {self.proc.pid, *children(self.proc.pid)}
        if now != self.expected:
            gone = {f"{self.roles.get(pid, '?')} {pid}" for pid in self.expected - now}
            raise BenchError(f"{self.name}: process(es) died or were replaced: gone {sorted(gone)}, "
                             f"new {sorted(now - self.expected)}\n{self.proc.log_tail()}")

    def cpu_by_role(self) -> dict[str, int]:
        """CPU ticks so far of the master, the workers together and the dispatcher."""
        ticks = {"master": cpu_ticks(self.proc.pid), "worker": 0, "dispatcher": 0}
        for pid in children(self.proc.pid):
            ticks["dispatcher" if is_dispatcher(pid) else "worker"] += cpu_ticks(pid)
        return ticks

    def cpu_ticks(self) -> int:
        return sum(self.cpu_by_role().values())

    def sample_memory(self) -> None:
        for pid in [self.proc.pid, *children(self.proc.pid)]:
            peak = status_kib(pid, "VmHWM")
            if peak is not None:
                self.peak_kib[pid] = max(peak, self.peak_kib.get(pid, 0))
                self.roles.setdefault(pid, self.role(pid))

    def growth(self) -> dict[str, tuple[float, float]]:
        """(RSS once ready, peak RSS) in MiB of each process, named by role (and number, for the workers)."""
        out, seen = {}, {}
        for pid, kib in sorted(self.peak_kib.items()):
            role = self.roles.get(pid, "?")
            seen[role] = seen.get(role, 0) + 1
            name = f"{role} {seen[role]}" if role == "worker" else role
            out[name] = (self.start_mib.get(pid, 0.0), kib / 1024)
        return out

    def peaks_mib(self) -> dict[str, list[float]]:
        """Peak RSS by role, one value per process."""
        out: dict[str, list[float]] = {}
        for pid, kib in sorted(self.peak_kib.items()):
            out.setdefault(self.roles.get(pid, "?"), []).append(kib / 1024)
        return out

    def rss_mib(self) -> dict[int, float]:
        """Current RSS of each process, by pid."""
        return {pid: (status_kib(pid, "VmRSS") or 0) / 1024 for pid in [self.proc.pid, *children(self.proc.pid)]}


class MemorySampler(threading.Thread):
    """Reads every process's VmHWM every quarter second, so a process that dies still counts."""

    def __init__(self, servers: list[Server]):
        super().__init__(daemon=True, name="rss-sampler")
        self.servers, self.halt = list(servers), threading.Event()
        self.lock = threading.Lock()

    def add(self, server: Server) -> None:
        with self.lock:
            self.servers.append(server)

    def run(self) -> None:
        while not self.halt.wait(0.25):
            with self.lock:
                servers = list(self.servers)
            for server in servers:
                server.sample_memory()

    def stop(self) -> None:
        self.halt.set()
        self.join(2)
        for server in self.servers:
            server.sample_memory()


class FakePlatforms:
    """bench/fake_platforms.py: lean fakes of the five platforms in a process of their own, over stdin/stdout."""

    def __init__(self, log: Path):
        self.proc = Proc("fakes", [sys.executable, str(BENCH / "fake_platforms.py"), *PLATFORMS], log, pipes=True)
        line = self.proc.popen.stdout.readline()
        if not line:
            raise BenchError(f"the fake platforms did not start:\n{self.proc.log_tail()}")
        self.urls: dict[str, str] = json.loads(line)["urls"]

    def command(self, name: str) -> dict:
        try:
            self.proc.popen.stdin.write(name + "\n")
            self.proc.popen.stdin.flush()
            line = self.proc.popen.stdout.readline()
        except OSError:
            line = ""
        if not line:
            raise BenchError(f"the fake platforms died:\n{self.proc.log_tail()}")
        return json.loads(line)

    def check(self, expected: dict[str, int], what: str) -> dict:
        """Each platform got exactly the expected events, each once, in 2xx-answered requests."""
        stats = self.command("stats")
        for name, count in expected.items():
            got = stats[name]
            bad = {s: n for s, n in got["statuses"].items() if not s.split()[-1].startswith("2")}
            if bad or got["events"] != count or got["distinct_event_ids"] != count:
                raise BenchError(f"{what}: fake {name} should have received {count} distinct events in 2xx-answered "
                                 f"requests; it has {got}")
        return stats


# ---------------------------------------------------------------- configs and databases


def example_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config.example.yaml").read_text())


def live_destinations(raw: dict, urls: dict[str, str], only: tuple[str, ...] = PLATFORMS) -> list[dict]:
    """The example's destinations, `live` toward the fakes (api_base, Google's token URL), with credentials."""
    out = []
    for dest in raw["sites"][0]["destinations"]:
        if dest["platform"] not in only:
            continue
        dest = {**copy.deepcopy(dest), "mode": "live", "api_base": urls[dest["platform"]]}
        for key in ("access_token", "api_secret", "client_id", "client_secret", "refresh_token", "developer_token"):
            if key in dest:
                dest[key] = TOKEN
        if dest["platform"] == "google_ads":
            dest["token_url"] = urls["google_ads"] + "/token"
        out.append(dest)
    if {d["platform"] for d in out} != set(only):
        raise BenchError(f"the example config lacks a destination for one of {only}")
    return out


def write_config(raw: dict, path: Path) -> Path:
    """Write a config and check it the way Postback will read it (an empty environment: no DATABASE_URL)."""
    import yaml

    from config import ConfigError, parse_config
    from platforms import REGISTRY

    text = yaml.safe_dump(raw, sort_keys=False)
    try:
        parse_config(text, {}, platforms=REGISTRY)
    except ConfigError as exc:
        raise BenchError(f"bench config invalid: {exc.problems}") from None
    path.write_text(text)
    return path


def child_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTBACK_CONFIG", "HOST", "PORT")}
    env.update(extra)
    return env


def db_connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(path, timeout=30)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def query(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    con = db_connect(path)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def backlog(path: Path) -> int:
    return query(path, "SELECT count(*) FROM sends WHERE status IN ('pending', 'sending')")[0][0]


def wait_drained(path: Path, stall: float) -> tuple[int, float]:
    """Wait until the dispatcher has no pending or sending row left, for as long as the backlog keeps shrinking:
    it gives up once `stall` seconds went by without a send finished. (rows left, seconds waited)."""
    start = time.monotonic()
    fewest, progressed = None, start
    while True:
        left, now = backlog(path), time.monotonic()
        if fewest is None or left < fewest:
            fewest, progressed = left, now
        if left == 0 or now - progressed >= stall:
            return left, now - start
        time.sleep(0.1)


@dataclass
class Footprint:
    events: int
    checkpointed: int  # file + WAL after a checkpoint
    vacuumed: int  # file after VACUUM: free pages not counted
    tables: dict[str, int]  # bytes per table and index after VACUUM (dbstat)
    empty: int = 0  # what the schema takes with no row at all: a page per table and index, and the first page

    @property
    def per_event(self) -> float:
        """Bytes each event adds: the vacuumed file less the empty schema's pages, which a few thousand events
        would otherwise share (57 tables and indexes of 8 KB: 230 B each over 2,000 events)."""
        return (self.vacuumed - self.empty) / self.events

    def top(self, n: int = 4) -> str:
        biggest = sorted(self.tables.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {size / self.events:,.0f}" for name, size in biggest)


def footprint(path: Path, work: Path) -> Footprint:
    """Bytes of the database as it is, measured on a copy (the server may still run): the copy's file + WAL after
    a checkpoint, then after VACUUM, with each table's and index's share from dbstat."""
    copy_path = work / f"{path.stem}-footprint-{time.monotonic_ns()}.db"
    source, target = db_connect(path), sqlite3.connect(copy_path)
    try:
        source.backup(target)
    finally:
        source.close()
    try:
        con = db_connect(path)
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            wal = Path(f"{path}-wal")
            checkpointed = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        finally:
            con.close()
        events = target.execute("SELECT count(*) FROM events").fetchone()[0]
        target.execute("VACUUM")
        target.commit()
        vacuumed = copy_path.stat().st_size
        page = target.execute("PRAGMA page_size").fetchone()[0]
        empty = page * (1 + target.execute("SELECT count(*) FROM sqlite_master WHERE rootpage > 0").fetchone()[0])
        try:
            tables = dict(target.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        except sqlite3.OperationalError:
            tables = {}
    finally:
        target.close()
        copy_path.unlink(missing_ok=True)
    if not events:
        raise BenchError(f"{path}: no event stored")
    return Footprint(events, checkpointed, vacuumed, tables, empty)


# ---------------------------------------------------------------- wrk runs


@dataclass
class WrkRun:
    target: str
    numbers: dict[str, int]
    wall: float
    wrk_cpu: float
    server_cpu: dict[str, float]  # seconds by role during the run
    cores: int
    box_busy: float  # share of the whole box's CPU in use during the run, by anything
    drain_cpu: dict[str, float] = field(default_factory=dict)  # seconds by role while the backlog emptied after it
    drain_seconds: float = 0.0

    @property
    def rps(self) -> float:
        return self.numbers["requests"] / (self.numbers["duration_us"] / 1e6)

    def ms(self, key: str) -> float:
        return self.numbers[key] / 1000

    @property
    def wrk_share(self) -> float:
        return self.wrk_cpu / (self.wall * self.cores)

    @property
    def server_share(self) -> float:
        return sum(self.server_cpu.values()) / (self.wall * self.cores)

    @property
    def others_share(self) -> float:
        """CPU the rest of the box (other people's work) used during the run."""
        return max(0.0, self.box_busy - self.wrk_share - self.server_share)

    def cpu_per_request(self, role: str | None = None) -> float:
        """Seconds of CPU per answered request: the run and the backlog's drain after it."""
        roles = [role] if role else list(self.server_cpu)
        spent = sum(self.server_cpu.get(r, 0.0) + self.drain_cpu.get(r, 0.0) for r in roles)
        return spent / self.numbers["requests"]


def run_wrk(server: Server, s: Settings, seconds: int, tag: str, work: Path, template: Path | None = None,
            path: str | None = None, connections: int | None = None) -> WrkRun:
    """One wrk run: POST the template to /v1/track, or GET `path` (the pixel)."""
    connections = connections or s.connections
    args = ["wrk", f"-t{min(s.wrk_threads, connections)}", f"-c{connections}", f"-d{seconds}s",
            "--timeout", s.wrk_timeout, "-H", f"User-Agent: {USER_AGENT}", "-H", f"X-Postback-Client-IP: {CLIENT_IP}"]
    if path is None:
        args += ["-s", str(BENCH / "track.lua"), "-H", "Content-Type: application/json",
                 f"{server.url}/v1/track", "--", tag, str(template)]
    else:
        args += ["-s", str(BENCH / "pixel.lua"), f"{server.url}/", "--", path]
    log = work / f"wrk-{tag}.log"
    ticks = os.sysconf("SC_CLK_TCK")
    before, box_before = server.cpu_by_role(), box_ticks()
    start = time.monotonic()
    code, cpu = Proc(f"wrk {tag}", args, log).wait4()
    wall = time.monotonic() - start
    after, box_after = server.cpu_by_role(), box_ticks()
    box_busy = (box_after[0] - box_before[0]) / max(1, box_after[1] - box_before[1])
    output = log.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"wrk exited with {code}:\n{output[-2000:]}")
    numbers = parse_wrk(output)
    if errors := wrk_errors(numbers):
        raise BenchError(f"{server.name} ({tag}): {errors} among {numbers['requests']} requests — a benchmark of "
                         f"failing requests measures nothing.\nserver log ({server.proc.log_path}):\n"
                         f"{server.proc.log_tail()}")
    if numbers["requests"] == 0:
        raise BenchError(f"{server.name}: wrk completed no request\n{output[-2000:]}")
    server.check_alive()
    return WrkRun(server.name, numbers, wall, cpu, {r: (after[r] - before[r]) / ticks for r in after},
                  len(os.sched_getaffinity(0)), box_busy)


def drain_after(server: Server, run: WrkRun, db_path: Path, s: Settings) -> None:
    """Wait for the dispatcher to empty the backlog the run left; its CPU meanwhile counts toward the run's."""
    ticks = os.sysconf("SC_CLK_TCK")
    before = server.cpu_by_role()
    left, waited = wait_drained(db_path, s.drain_wait)
    after = server.cpu_by_role()
    if left:
        raise BenchError(f"{server.name}: the dispatcher still had {left} send(s) pending after a run, and none "
                         f"finished in the last {s.drain_wait:g} s (raise BENCH_DRAIN_WAIT?)\n{server.proc.log_tail()}")
    run.drain_cpu = {r: (after[r] - before[r]) / ticks for r in after}
    run.drain_seconds = waited
    server.check_alive()


def say_run(tag: str, one: WrkRun) -> None:
    drained = f", backlog drained in {one.drain_seconds:.1f} s" if one.drain_cpu else ""
    say(f"  {tag}: {one.rps:,.0f} req/s, p50 {one.ms('p50_us'):.1f} ms, p99 {one.ms('p99_us'):.1f} ms, "
        f"CPU {one.cpu_per_request() * 1e3:.2f} ms/request; box: wrk {one.wrk_share:.0%}, server "
        f"{one.server_share:.0%}, others {one.others_share:.0%}{drained}")


@dataclass
class PairSet:
    """Alternating Postback/bare runs of one kind (ingest dry, ingest live, pixel)."""
    name: str
    postback: list[WrkRun] = field(default_factory=list)
    bare: list[WrkRun] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return pair_ratios([r.rps for r in self.postback], [r.rps for r in self.bare])


def run_pairs(name: str, postback: Server, bare: Server, s: Settings, work: Path, db_path: Path,
              template: Path | None = None, paths: tuple[str, str] | None = None) -> PairSet:
    """Warm both up, then Postback, bare, Postback, bare, ...; after each Postback run the backlog empties."""
    result = PairSet(name)
    pb_path, bare_path = paths or (None, None)
    if s.warmup_seconds:
        for server, path in ((postback, pb_path), (bare, bare_path)):
            run_wrk(server, s, s.warmup_seconds, f"{name}-warm-{server.name}", work, template, path)
        wait_drained(db_path, s.drain_wait)
    for i in range(s.pairs):
        one = run_wrk(postback, s, s.seconds, f"{name}-p{i}-postback", work, template, pb_path)
        drain_after(postback, one, db_path, s)
        say_run(f"{name} pair {i} postback", one)
        result.postback.append(one)
        other = run_wrk(bare, s, s.seconds, f"{name}-p{i}-bare", work, template, bare_path)
        say_run(f"{name} pair {i} bare", other)
        result.bare.append(other)
    return result


# ---------------------------------------------------------------- 1, 2. ingest and pixel


@dataclass
class IngestResult:
    sets: dict[str, PairSet] = field(default_factory=dict)
    peaks: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # server -> role -> peak MiB
    growth: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # server -> process -> (start, peak)
    db: dict[str, Footprint] = field(default_factory=dict)


def answered(runs: list[WrkRun]) -> int:
    return sum(r.numbers["requests"] for r in runs)


def check_stored(db_path: Path, at_least: int, what: str) -> int:
    """wrk counts only answered requests; one still in flight when wrk stopped may be stored too."""
    events = query(db_path, "SELECT count(*) FROM events")[0][0]
    if events < at_least:
        raise BenchError(f"{what}: wrk counted {at_least} answered requests but only {events} events are stored: "
                         "event ids collided (\"Duplicate event ignored\") or writes were lost")
    return events


def postback_server(name: str, raw: dict, work: Path, workers: int,
                    destinations: list | None = None) -> tuple[Server, Path]:
    """Postback under gunicorn.conf.py with its dispatcher, on a database and config of its own in work/<name>;
    `destinations` replace the example's."""
    folder = work / name
    folder.mkdir()
    db = folder / "postback.db"
    config = copy.deepcopy(raw)
    config["storage"]["database"] = f"sqlite:///{db}"
    if destinations is not None:
        config["sites"][0]["destinations"] = destinations
    server = Server(f"postback-{name}", ROOT / "gunicorn.conf.py",
                    child_env(POSTBACK_CONFIG=str(write_config(config, folder / "config.yaml"))),
                    work / f"postback-{name}.log", workers, dispatcher=True)
    return server, db


def ingest(s: Settings, work: Path, gconf: dict, fakes: FakePlatforms) -> IngestResult:
    result = IngestResult()
    workers = int(gconf["workers"])
    template = work / "purchase.json"
    template.write_text(json.dumps(PURCHASE, separators=(",", ":")))
    bare = Server("bare", BENCH / "gunicorn_bare.conf.py", child_env(), work / "bare.log", workers)
    sampler = MemorySampler([bare])
    raw = example_config()
    token = raw["sites"][0]["pixel_token"]
    try:
        bare.wait_ready()
        sampler.start()

        # The example config as is: five dry destinations.
        dry, dry_db = postback_server("dry", raw, work, workers)
        try:
            dry.wait_ready()
            sampler.add(dry)
            say(f"ingest (dry): postback at {dry.url}, bare at {bare.url}; {s.pairs} pair(s) × {s.seconds} s "
                f"at {s.connections} connections")
            result.sets["dry"] = run_pairs("dry", dry, bare, s, work, dry_db, template=template)
            stored = check_stored(dry_db, answered(result.sets["dry"].postback), "ingest (dry)")
            statuses = dict(query(dry_db, "SELECT status, count(*) FROM sends GROUP BY status"))
            if set(statuses) != {"skipped"} or statuses["skipped"] != 5 * stored:
                raise BenchError(f"ingest (dry): expected {5 * stored} sends `skipped` (dry), found {statuses}")
            result.db["dry"] = footprint(dry_db, work)
            say(f"pixel: {s.pairs} pair(s) × {s.seconds} s, Postback's pixel vs the bare GIF route")
            result.sets["pixel"] = run_pairs("pixel", dry, bare, s, work, dry_db,
                                             paths=(pixel_path(token), pixel_path(token)))
            check_stored(dry_db, stored + answered(result.sets["pixel"].postback), "pixel")
        finally:
            dry.sample_memory()
            dry.proc.stop()

        # Every destination live, each toward its fake.
        fakes.command("reset")
        live, live_db = postback_server("live", raw, work, workers, destinations=live_destinations(raw, fakes.urls))
        try:
            live.wait_ready()
            sampler.add(live)
            say(f"ingest (live): postback at {live.url}, five fakes in their own process")
            result.sets["live"] = run_pairs("live", live, bare, s, work, live_db, template=template)
            stored = check_stored(live_db, answered(result.sets["live"].postback), "ingest (live)")
            statuses = dict(query(live_db, "SELECT status, count(*) FROM sends GROUP BY status"))
            if statuses != {"sent": 5 * stored}:
                raise BenchError(f"ingest (live): expected {5 * stored} sends `sent`, found {statuses}")
            fakes.check({p: stored for p in PLATFORMS}, "ingest (live)")
        finally:
            live.sample_memory()
            live.proc.stop()
        sampler.stop()
        for server in (dry, live, bare):
            result.peaks[server.name] = server.peaks_mib()
            result.growth[server.name] = server.growth()
    finally:
        sampler.halt.set()
        bare.proc.stop()
    return result


# ---------------------------------------------------------------- 3. dispatch


@dataclass
class DispatchRun:
    platforms: tuple[str, ...]
    events: int
    seconds: float
    seed_seconds: float
    cpu: dict[str, float]  # dispatcher's CPU seconds; shares of the box during the drain
    db: Footprint | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds


def seed(n: int, config) -> None:
    """One event through the real parse and models.record_event, then n - 1 copies of it in SQL."""
    from ingest.canonical import utcnow
    from dialects.channelstack import parse as channelstack
    from dialects.common import ClientContext
    from models import database, record_event
    from ingest.fanout import plan_sends

    site = config.site_for_key(API_KEY)
    body = {**PURCHASE, "event_id": "seed", "order_id": "ord-seed"}
    event = channelstack.parse(body, ClientContext(ip=CLIENT_IP, user_agent=USER_AGENT), site,
                               config.consent_default, utcnow())
    row, created = record_event(event, plan_sends(event, site), config.ip_policy)
    if not created or n == 1:
        return
    columns = [r[1] for r in database.execute_sql("PRAGMA table_info(events)").fetchall() if r[1] != "id"]
    picks = [f"e.{c} || '-' || seq.n" if c in ("event_id", "order_id") else f"e.{c}" for c in columns]
    send_columns = [r[1] for r in database.execute_sql("PRAGMA table_info(sends)").fetchall() if r[1] != "id"]
    send_picks = ["e.id" if c == "event_id" else f"t.{c}" for c in send_columns]
    with database.atomic():
        database.execute_sql(
            f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?) "
            f"INSERT INTO events ({', '.join(columns)}) SELECT {', '.join(picks)} FROM events e, seq WHERE e.id = ?",
            (n - 1, row.id))
        database.execute_sql(
            f"INSERT INTO sends ({', '.join(send_columns)}) SELECT {', '.join(send_picks)} "
            f"FROM events e, sends t WHERE t.event_id = ? AND e.id != ? ORDER BY e.id",
            (row.id, row.id))


def dispatch_once(n: int, only: tuple[str, ...], urls: dict[str, str], folder: Path, fake_pid: int,
                  measure_db: bool) -> DispatchRun:
    from delivery import sends as delivery
    from ingest.canonical import utcnow
    from config import parse_config
    from delivery.dispatcher import CONNECTION_PRAGMAS, Dispatcher
    from models import database, open_database
    from platforms import REGISTRY

    import yaml

    folder.mkdir()
    db_path = folder / "postback.db"
    raw = example_config()
    raw["storage"]["database"] = f"sqlite:///{db_path}"
    raw["sites"][0]["destinations"] = live_destinations(raw, urls, only)
    config = parse_config(yaml.safe_dump(raw), {}, platforms=REGISTRY)
    open_database(config.database, pragmas=CONNECTION_PRAGMAS)  # as the dispatcher process opens it
    try:
        started = time.perf_counter()
        seed(n, config)
        seed_seconds = time.perf_counter() - started
        marks: dict[str, float] = {}
        real_claim, real_record = delivery.claim, delivery.record

        def claim(*args, **kwargs):
            marks.setdefault("first", time.perf_counter())
            return real_claim(*args, **kwargs)

        def record(*args, **kwargs):
            done = real_record(*args, **kwargs)
            marks["last"] = time.perf_counter()
            return done

        dispatcher = Dispatcher(lambda: config)
        delivery.claim, delivery.record = claim, record
        ticks = os.sysconf("SC_CLK_TCK")
        cpu_before, fake_before, box_before, wall_before = (
            time.process_time(), cpu_ticks(fake_pid), box_ticks(), time.monotonic())
        try:
            dispatcher.drain_once(utcnow())
            wall, cores = time.monotonic() - wall_before, len(os.sched_getaffinity(0))
            box_after = box_ticks()
            own = time.process_time() - cpu_before
            cpu = {
                "dispatcher_seconds": own,
                "dispatcher": own / (wall * cores),
                "fake": (cpu_ticks(fake_pid) - fake_before) / ticks / (wall * cores),
                "box": (box_after[0] - box_before[0]) / max(1, box_after[1] - box_before[1]),
            }
            cpu["others"] = max(0.0, cpu["box"] - cpu["dispatcher"] - cpu["fake"])
        finally:
            delivery.claim, delivery.record = real_claim, real_record
            dispatcher.close()
        statuses = dict(database.execute_sql("SELECT status, count(*) FROM sends GROUP BY status").fetchall())
        if statuses != {"sent": n * len(only)}:
            raise BenchError(f"dispatch to {'+'.join(only)}: expected all {n * len(only)} sends `sent`, found {statuses}")
        if "first" not in marks or "last" not in marks:
            raise BenchError("dispatch: no claim or no outcome was timed")
        seconds = marks["last"] - marks["first"]
    finally:
        database.close()
    return DispatchRun(only, n, seconds, seed_seconds, cpu, footprint(db_path, folder) if measure_db else None)


def dispatch(s: Settings, work: Path, fakes: FakePlatforms) -> list[DispatchRun]:
    """Each round: Meta alone, every other platform alone, then all five together; the same backlog each time."""
    runs: list[DispatchRun] = []
    sets = [(p,) for p in PLATFORMS] + [PLATFORMS]
    say(f"dispatch: {s.dispatch_runs} round(s) of {s.events:,} events to each fake alone and to all five together")
    for r in range(s.dispatch_runs):
        for only in sets:
            fakes.command("reset")
            folder = work / f"dispatch-{r}-{'+'.join(only)}"
            one = dispatch_once(s.events, only, fakes.urls, folder, fakes.proc.pid,
                                measure_db=only == ("meta",) and r == s.dispatch_runs - 1)
            fakes.check({p: s.events for p in only}, f"dispatch to {'+'.join(only)}")
            runs.append(one)
            say(f"  round {r} {'+'.join(only)}: seeded in {one.seed_seconds:.1f} s, drained in {one.seconds:.2f} s: "
                f"{one.events_per_second:,.0f} events/s; box: dispatcher {one.cpu['dispatcher']:.0%}, fakes "
                f"{one.cpu['fake']:.0%}, others {one.cpu['others']:.0%}")
            shutil.rmtree(folder, ignore_errors=True)
    return runs


# ---------------------------------------------------------------- 4. the long run (BENCH_MILLION)


@dataclass
class LongRun:
    events: int
    seconds: float
    baseline: dict[str, float]  # "role pid" -> RSS MiB once 10 % of the events were in
    final: dict[str, float]
    peaks: dict[str, list[float]]

    @property
    def drift(self) -> dict[str, float]:
        return {k: self.final[k] / self.baseline[k] - 1 for k in self.baseline if self.baseline[k] and k in self.final}


def long_run(s: Settings, work: Path, gconf: dict) -> LongRun:
    folder = work / "long"
    folder.mkdir()
    db_path = folder / "postback.db"
    raw = example_config()
    raw["storage"]["database"] = f"sqlite:///{db_path}"
    template = work / "purchase.json"
    server = Server("postback-long", ROOT / "gunicorn.conf.py",
                    child_env(POSTBACK_CONFIG=str(write_config(raw, folder / "config.yaml"))),
                    work / "postback-long.log", int(gconf["workers"]), dispatcher=True)
    sampler = MemorySampler([server])
    started = time.monotonic()
    try:
        server.wait_ready()
        sampler.start()
        say(f"long run: {s.million:,} events in wrk runs of {s.chunk_seconds} s")
        stored, answered_total, baseline, chunk = 0, 0, {}, 0
        while stored < s.million:
            one = run_wrk(server, s, s.chunk_seconds, f"long-{chunk}", work, template)
            drain_after(server, one, db_path, s)
            answered_total += one.numbers["requests"]
            stored = check_stored(db_path, answered_total, "long run")
            rss = {f"{server.roles.get(pid, '?')} {pid}": mib for pid, mib in server.rss_mib().items()}
            if not baseline and stored >= s.million / 10:
                baseline = rss
            say(f"  {stored:,} events after {time.monotonic() - started:.0f} s; RSS "
                + ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()))
            chunk += 1
        sampler.stop()
        return LongRun(stored, time.monotonic() - started, baseline, rss, server.peaks_mib())
    finally:
        sampler.halt.set()
        server.proc.stop()


# ---------------------------------------------------------------- report


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def git_head() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "wrk ?"


def body_bytes() -> int:
    """The size of one ingest request's body, with an event id as long as a typical one."""
    one = "dry-p0-postback-t1-12345"
    return len(json.dumps({**PURCHASE, "event_id": one, "order_id": f"ord-{one}"}, separators=(",", ":")))


def median_of(runs, key) -> float:
    return statistics.median(key(r) for r in runs)


def cpu_reason(pairs: PairSet) -> str:
    """Why a ratio to bare is what it is: CPU per request, Postback's processes against the bare server's."""
    pb = median_of(pairs.postback, lambda r: r.cpu_per_request())
    pb_run = median_of(pairs.postback, lambda r: sum(r.server_cpu.values()) / r.numbers["requests"])
    bare = median_of(pairs.bare, lambda r: r.cpu_per_request())
    roles = ", ".join(f"{role} {median_of(pairs.postback, lambda r, role=role: r.cpu_per_request(role)) * 1e3:.2f}"
                      for role in ("worker", "dispatcher", "master"))
    busy = median_of(pairs.postback, lambda r: r.box_busy)
    others = median_of(pairs.postback, lambda r: r.others_share)
    wrk = median_of(pairs.postback, lambda r: r.wrk_share)
    return (f"CPU per request: Postback {pb * 1e3:.2f} ms ({roles}; the dispatcher's includes emptying the backlog "
            f"after each run), {pb_run * 1e3:.2f} ms of it during the runs, against bare {bare * 1e3:.2f} ms. "
            f"On a CPU-bound box the ratio cannot pass bare ÷ Postback CPU per request: {bare / pb_run:.2f}× while "
            f"the backlog waits, {bare / pb:.2f}× once each event's dispatch is paid for. During the Postback runs "
            f"the box was {busy:.0%} busy (wrk {wrk:.0%}, other work {others:.0%}).")


def report(s: Settings, gconf: dict, ing: IngestResult, disp: list[DispatchRun], long: LongRun | None,
           started: datetime, load: tuple[float, float, float], elapsed: float) -> tuple[str, list[Target]]:
    cores = len(os.sched_getaffinity(0))
    c = s.connections
    targets: list[Target] = []
    for key, label in (("dry", "five dry destinations"), ("live", "five live destinations → fakes")):
        pairs = ing.sets[key]
        targets.append(Target(f"1. Ingest ÷ bare Flask, {c} conns, {label}, dispatcher running", pairs.ratios, "x",
                              0.5, True, cpu_reason(pairs)))
    for key, label in (("dry", "five dry destinations"), ("live", "five live destinations")):
        runs = ing.sets[key].postback
        p50 = median_of(runs, lambda r: r.ms("p50_us"))
        bare_p99 = median_of(ing.sets[key].bare, lambda r: r.ms("p99_us"))
        rps = median_of(runs, lambda r: r.rps)
        # Little's law: with every connection always waiting on a request, the mean time in the server is
        # connections ÷ throughput, however the work inside is arranged; the run's p99 sits a measured factor above.
        mean_ms = c / rps * 1e3
        tail = median_of(runs, lambda r: r.ms("p99_us") / (c / r.rps * 1e3))
        targets.append(Target(
            f"2. Ingest p99, {c} conns, {label}", [r.ms("p99_us") for r in runs], "ms", 50, False,
            f"{c} connections always waiting at {rps:,.0f} req/s put the mean request at {mean_ms:.1f} ms in the "
            f"server (Little's law: connections ÷ throughput), and the p99 was {tail:.1f}× that mean, so a p99 within "
            f"50 ms takes about {c * tail / 0.050:,.0f} req/s, {c * tail / 0.050 / rps:.1f}× this run's rate (the CPU "
            f"per request above bounds that rate); p50 {p50:.1f} ms; bare Flask's p99 in the same pairs "
            f"{bare_p99:.1f} ms; during the runs the box was {median_of(runs, lambda r: r.box_busy):.0%} busy "
            f"(Postback {median_of(runs, lambda r: r.server_share):.0%}, of it the dispatcher "
            f"{median_of(runs, lambda r: r.server_cpu['dispatcher'] / (r.wall * r.cores)):.0%}; wrk "
            f"{median_of(runs, lambda r: r.wrk_share):.0%}; other work {median_of(runs, lambda r: r.others_share):.0%}); "
            f"{gconf['workers']} workers × {gconf['threads']} threads for {c} connections."))
    live_rps = median_of(ing.sets["live"].postback, lambda r: r.rps)
    meta = [r for r in disp if r.platforms == ("meta",)]
    meta_cpu = median_of(meta, lambda r: r.cpu["dispatcher_seconds"] / r.events)
    targets.append(Target(
        "3. Drain to the fake Meta ÷ ingest rate (live set's median)", [r.events_per_second / live_rps for r in meta],
        "x", 5, True,
        f"drain {median_of(meta, lambda r: r.events_per_second):,.0f} events/s against ingest {live_rps:,.0f}/s; "
        f"the dispatcher spent {meta_cpu * 1e6:,.0f} µs of CPU per event and used "
        f"{median_of(meta, lambda r: r.cpu['dispatcher']) * cores:.2f} core(s); fakes "
        f"{median_of(meta, lambda r: r.cpu['fake']):.0%}, other work {median_of(meta, lambda r: r.cpu['others']):.0%} "
        f"of the box."))
    rounds = s.dispatch_runs
    together_ratio, cpu_floor, alone_desc = [], [], []
    for r in range(rounds):
        chunk = disp[r * (len(PLATFORMS) + 1):(r + 1) * (len(PLATFORMS) + 1)]
        alone = {run.platforms[0]: run.seconds for run in chunk if len(run.platforms) == 1}
        together = next(run for run in chunk if len(run.platforms) > 1)
        together_ratio.append(together.seconds / max(alone.values()))
        cpu_floor.append(together.cpu["dispatcher_seconds"] / max(alone.values()))
    together_runs = [r for r in disp if len(r.platforms) > 1]
    for p in PLATFORMS:
        alone_desc.append(f"{p} {median_of([r for r in disp if r.platforms == (p,)], lambda r: r.seconds):.2f} s")
    targets.append(Target(
        "3. Five platforms together ÷ slowest platform alone (drain time, same backlog)", together_ratio, "x", 1.0,
        False,
        f"alone: {', '.join(alone_desc)} (together they add up to "
        f"{sum(median_of([r for r in disp if r.platforms == (p,)], lambda r: r.seconds) for p in PLATFORMS):.2f} s); "
        f"together {median_of(together_runs, lambda r: r.seconds):.2f} s, the "
        f"dispatcher using {median_of(together_runs, lambda r: r.cpu['dispatcher']) * cores:.2f} core(s) "
        f"({median_of(together_runs, lambda r: r.cpu['dispatcher_seconds'] / r.events / len(PLATFORMS)) * 1e6:,.0f} "
        f"µs of CPU per send; alone it used {median_of([r for r in disp if len(r.platforms) == 1], lambda r: r.cpu['dispatcher']) * cores:.2f}); "
        f"fakes {median_of(together_runs, lambda r: r.cpu['fake']):.0%}, other work "
        f"{median_of(together_runs, lambda r: r.cpu['others']):.0%} of the box. The fakes answer at once, so each "
        f"drain is bound by its own CPU, and the five share one process's interpreter lock (one core at most): "
        f"their CPU alone, {median_of(together_runs, lambda r: r.cpu['dispatcher_seconds']):.2f} s, is "
        f"{statistics.median(cpu_floor):.2f}× "
        f"the slowest platform's time alone. Against platforms that take time to answer, the drains wait side by "
        f"side (docs/delivery.md)."))
    grown = {f"{server.split('-')[1]} set's {name}": pair for server in ("postback-dry", "postback-live")
             for name, pair in ing.growth.get(server, {}).items()}
    over = {k: v for k, v in grown.items() if v[1] > 80}
    targets.append(Target(
        "4. Peak RSS per process (worst of master, workers, dispatcher)", [max(v[1] for v in grown.values())], "MiB",
        80, False,
        "over the goal (RSS once ready → peak VmHWM over the runs): " + ", ".join(
            f"{k} {start:.1f} → {peak:.1f} MiB" for k, (start, peak) in sorted(over.items(), key=lambda kv: -kv[1][1]))
        + "; bare Flask's workers peaked at " + " / ".join(f"{v:.1f}" for v in ing.peaks.get("bare", {}).get("worker", []))
        + " MiB."))
    if long is None:
        targets.append(Target("4. RSS flat (±10 %) across 1,000,000 events", [], "%", 0.10, False,
                              not_run="BENCH_MILLION=1 runs it (about 25 minutes more)"))
    else:
        drift = long.drift
        worst = max(drift, key=lambda k: abs(drift[k])) if drift else None
        targets.append(Target(
            f"4. RSS drift across {long.events:,} events (took {duration(long.seconds)}), worst process",
            [abs(drift[worst]) if worst else 0.0], "%", 0.10, False,
            "RSS once 10 % of the events were in → at the end: " + ", ".join(
                f"{k} {long.baseline[k]:.1f} → {long.final.get(k, 0):.1f} MiB" for k in long.baseline)))
        long_peak = max(v for values in long.peaks.values() for v in values)
        targets.append(Target(f"4. Peak RSS per process over the {long.events:,}-event run", [long_peak], "MiB", 80,
                              False, "peaks: " + ", ".join(f"{role} {max(v):.1f} MiB" for role, v in long.peaks.items())))
    targets.append(Target(f"5. Pixel GET ÷ bare GIF route, {c} conns", ing.sets["pixel"].ratios, "x", 0.5, True,
                          cpu_reason(ing.sets["pixel"])))
    meta_db = next(r.db for r in reversed(meta) if r.db)
    targets.append(Target(
        "6. Database bytes per delivered event, after dispatch to Meta alone (after VACUUM, less the empty schema)",
        [meta_db.per_event], "B", 1200, False,
        f"bytes per event by table/index: {meta_db.top()}; file + WAL after a checkpoint "
        f"{meta_db.checkpointed / meta_db.events:,.0f}"))
    dry_db = ing.db["dry"]
    targets.append(Target(
        "6. Database bytes per event after ingest, five dry destinations (after VACUUM, less the empty schema)", [dry_db.per_event], "B",
        2500, False,
        f"bytes per event by table/index: {dry_db.top()}; file + WAL after a checkpoint "
        f"{dry_db.checkpointed / dry_db.events:,.0f}"))

    dry_names = [d["platform"] for d in example_config()["sites"][0]["destinations"] if d.get("mode") == "dry"]
    met = sum(t.verdict == "met" for t in targets)
    missed = [t for t in targets if t.verdict == "MISSED"]
    lines = [
        f"## make bench — {started:%Y-%m-%d %H:%M} UTC, {git_head()}, took {elapsed:.0f} s",
        "",
        f"- Box: {cores} cores shared with other work, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
        f"(1/5/15 min) before the run; Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"{wrk_version()}, {s.wrk_threads} threads, {c} connections.",
        f"- Servers: gunicorn.conf.py as `make run` uses it ({gconf['worker_class']}, {gconf['workers']} workers × "
        f"{gconf['threads']} threads, keepalive {gconf['keepalive']} s, access log "
        f"{'to stdout' if gconf['accesslog'] == '-' else gconf['accesslog'] or 'off'}), the dispatcher in its own "
        f"process; bench/bare.py under the same settings.",
        f"- Each ratio: the median of {s.pairs} alternating Postback/bare pair(s) of {s.seconds} s runs after a "
        f"{s.warmup_seconds} s warm-up; a {body_bytes()}-byte purchase with a new event_id and order_id per request. "
        f"Dry set: the example config as is ({', '.join(dry_names)} in dry mode). Live set: the same five `live`, "
        f"each toward a lean fake in a process of its own. Each Postback run is followed by waiting for the backlog "
        f"to empty; that CPU counts toward Postback's per request.",
        f"- Dispatch: {rounds} round(s) of {s.events:,} pre-filled events drained by one Dispatcher to each fake "
        f"alone, then to all five together.",
        f"- {met} of {len(targets)} targets met, {len(missed)} missed.",
        "",
        "| Target | Measured (median, min–max) | Goal | Verdict | vs goal |",
        "| --- | --- | --- | --- | --- |",
        *(t.row() for t in targets),
        "",
    ]
    for t in missed:
        lines.append(f"- **MISSED — {t.name}**: {t.reason}")
    if missed:
        lines.append("")
    lines += [
        "Figures behind the ratios (medians):",
        "",
        "| Figure | Postback | bare |",
        "| --- | --- | --- |",
    ]
    for key, label in (("dry", "Ingest, dry"), ("live", "Ingest, live"), ("pixel", "Pixel GET")):
        pairs = ing.sets[key]
        lines.append(f"| {label}: requests/s | {median_of(pairs.postback, lambda r: r.rps):,.0f} | "
                     f"{median_of(pairs.bare, lambda r: r.rps):,.0f} |")
        lines.append(f"| {label}: p50 / p99 | {median_of(pairs.postback, lambda r: r.ms('p50_us')):.1f} / "
                     f"{median_of(pairs.postback, lambda r: r.ms('p99_us')):.1f} ms | "
                     f"{median_of(pairs.bare, lambda r: r.ms('p50_us')):.1f} / "
                     f"{median_of(pairs.bare, lambda r: r.ms('p99_us')):.1f} ms |")
        lines.append(f"| {label}: CPU per request | {median_of(pairs.postback, lambda r: r.cpu_per_request()) * 1e3:.2f} ms | "
                     f"{median_of(pairs.bare, lambda r: r.cpu_per_request()) * 1e3:.2f} ms |")
        if key != "pixel":
            lines.append(f"| {label}: backlog emptied after a run in | "
                         f"{median_of(pairs.postback, lambda r: r.drain_seconds):.1f} s | |")
    for p in PLATFORMS:
        runs = [r for r in disp if r.platforms == (p,)]
        lines.append(f"| Dispatch to {p} alone: events/s | {median_of(runs, lambda r: r.events_per_second):,.0f} | |")
    together_runs = [r for r in disp if len(r.platforms) > 1]
    lines.append(f"| Dispatch to all five together: sends/s | "
                 f"{median_of(together_runs, lambda r: r.events_per_second * len(PLATFORMS)):,.0f} | |")
    for label, db in (("after dispatch to Meta alone", meta_db), ("after ingest, five dry", dry_db)):
        lines.append(f"| Database bytes per event {label}: after VACUUM / file + WAL after a checkpoint | "
                     f"{db.per_event:,.0f} / {db.checkpointed / db.events:,.0f} | |")
    for name in ("postback-dry", "postback-live", "bare"):
        by_role = ing.peaks.get(name, {})
        text = ", ".join(f"{role} {' / '.join(f'{v:.1f}' for v in values)}" for role, values in by_role.items())
        lines.append(f"| Peak RSS, {name} (MiB) | {text} | |")
    return "\n".join(lines) + "\n", targets


def main() -> int:
    started = datetime.now(timezone.utc)
    clock = time.monotonic()
    load = os.getloadavg()
    work = None
    ok = False

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    settings = None
    try:
        settings = Settings.from_env(os.environ)
        if shutil.which("wrk") is None:
            raise BenchError("wrk is not installed (make bench installs it: apt-get install -y wrk)")
        work = Path(tempfile.mkdtemp(prefix="postback-bench-"))
        gconf = gunicorn_settings()
        say(f"make bench: working in {work}; load average {load[0]:.2f} on {len(os.sched_getaffinity(0))} cores")
        fakes = FakePlatforms(work / "fakes.log")
        ing = ingest(settings, work, gconf, fakes)
        disp = dispatch(settings, work, fakes)
        long = long_run(settings, work, gconf) if settings.million else None
        text, _ = report(settings, gconf, ing, disp, long, started, load, time.monotonic() - clock)
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        settings.out.write_text(text)
        print(text, end="", flush=True)
        say(f"written to {settings.out}")
        ok = True
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure: say so loudly, leave no stale table
        text = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        line = "!" * 72
        say(f"\n{line}\nBENCH FAILED: {text}\n{line}")
        out = settings.out if settings is not None else BENCH / "out" / "last.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"## make bench FAILED — {started:%Y-%m-%d %H:%M} UTC\n\n```\n{text}\n```\n")
        return 1
    finally:
        Proc.stop_all()
        if work is not None:
            if ok and not (settings and settings.keep):
                shutil.rmtree(work, ignore_errors=True)
            else:
                say(f"temp folder kept: {work}")


if __name__ == "__main__":
    sys.exit(main())
