"""`make bench`: Postback's first benchmark, on this one box, printed as ONE Markdown table.

1. Ingest: wrk POSTs a ~600-byte purchase event with a unique event_id per request (bench/track.lua)
   to Postback under gunicorn with gunicorn.conf.py (what `make run` uses; the dispatcher runs in its own
   process that gunicorn's master starts, as in production, draining the example's destinations, all in
   dry mode), and
   in the same run to a bare Flask endpoint (bench/bare.py) under the same gunicorn settings
   (bench/gunicorn_bare.conf.py). Runs alternate between the two so drifting load on the shared box
   hits both; every Postback run starts with the dispatcher's backlog empty.
2. Dispatch: BENCH_EVENTS events stored straight into a fresh SQLite database (one through
   models.record_event, the rest copied by INSERT ... SELECT), a live Meta destination pointed at
   FakeMeta running in a process of its own; Dispatcher.drain_once is timed from the first claim
   to the last recorded outcome.
3. Footprint: peak RSS (VmHWM) of a gunicorn worker and of the dispatcher process during the ingest runs,
   and database bytes per stored event (file + WAL after a checkpoint).

Every figure is the median of several runs, with min and max. Knobs (environment):
BENCH_RUNS (3), BENCH_SECONDS (8), BENCH_CONNECTIONS ("16,64"), BENCH_WRK_THREADS (2),
BENCH_WRK_TIMEOUT ("5s"), BENCH_WARMUP_SECONDS (2), BENCH_EVENTS (50000), BENCH_DISPATCH_RUNS
(= BENCH_RUNS), BENCH_DRAIN_WAIT (60, seconds to wait for the dispatcher's backlog between runs),
BENCH_OUT (bench/out/last.md), BENCH_KEEP=1 (keep the temp folder). Quick smoke:
    BENCH_RUNS=1 BENCH_SECONDS=2 BENCH_WARMUP_SECONDS=1 BENCH_EVENTS=2000 make bench

Fails loudly (exit 1) on any non-2xx response, socket error, lost or duplicated event.
"""
from __future__ import annotations

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
META_TOKEN = "bench-meta-token"
USER_AGENT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/126.0 Safari/537.36")
CLIENT_IP = "203.0.113.7"
# A realistic purchase from a shop's server: ChannelStack's documented example's fields, with well-formed click ids.
PURCHASE = {
    "api_key": API_KEY,
    "event": "purchase_completed",
    "event_id": "@ID@",
    "order_id": "ord_abc123",
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
LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")


class BenchError(Exception):
    """The bench cannot report a trustworthy figure: it stops, loudly."""


# ---------------------------------------------------------------- settings and pure helpers


@dataclass(frozen=True)
class Settings:
    runs: int = 3
    seconds: int = 8
    connections: tuple[int, ...] = (16, 64)
    wrk_threads: int = 2
    wrk_timeout: str = "5s"
    warmup_seconds: int = 2
    events: int = 50_000
    dispatch_runs: int = 3
    drain_wait: float = 60.0
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

        runs = number("BENCH_RUNS", 3, minimum=1)
        try:
            connections = tuple(int(c) for c in env.get("BENCH_CONNECTIONS", "16,64").split(",") if c.strip())
        except ValueError:
            raise BenchError(f"BENCH_CONNECTIONS={env.get('BENCH_CONNECTIONS')!r}: expected e.g. 16,64") from None
        if not connections or min(connections) < 1:
            raise BenchError("BENCH_CONNECTIONS: give at least one positive connection count")
        return cls(
            runs=runs,
            seconds=number("BENCH_SECONDS", 8, minimum=1),
            connections=connections,
            wrk_threads=number("BENCH_WRK_THREADS", 2, minimum=1),
            wrk_timeout=env.get("BENCH_WRK_TIMEOUT", "").strip() or "5s",
            warmup_seconds=number("BENCH_WARMUP_SECONDS", 2),
            events=number("BENCH_EVENTS", 50_000, minimum=1),
            dispatch_runs=number("BENCH_DISPATCH_RUNS", runs, minimum=1),
            drain_wait=number("BENCH_DRAIN_WAIT", 60.0, float),
            out=Path(env.get("BENCH_OUT") or BENCH / "out" / "last.md"),
            keep=env.get("BENCH_KEEP", "") not in ("", "0"),
        )


def parse_wrk(output: str) -> dict[str, int]:
    """The numbers from the `BENCH key=value ...` line that bench/track.lua's done() prints."""
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


def figure(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.1f} %"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if abs(value) >= 100:
        return f"{value:,.0f}{' ' + unit if unit else ''}"
    return f"{value:.1f}{' ' + unit if unit else ''}"


def table_row(name: str, values: list[float], unit: str, note: str = "") -> str:
    median, low, high = spread(values)
    return f"| {name} | {figure(median, unit)} | {figure(low, unit)} | {figure(high, unit)} | {len(values)} | {note} |"


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


def flock_holder(path: Path) -> int | None:
    """The pid holding a flock on path, from /proc/locks (the dispatcher's leader lock)."""
    try:
        inode = path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "FLOCK" in fields and fields[-3].split(":")[-1] == str(inode):
                return int(fields[-4])
    except (OSError, ValueError, IndexError):
        pass
    return None


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

    def __init__(self, name: str, conf: Path, env: dict, log: Path, workers: int):
        self.name, self.workers = name, workers
        # `python -m gunicorn` with this interpreter: a venv made without console scripts has no gunicorn binary.
        self.proc = Proc(name, [sys.executable, "-m", "gunicorn", "-c", str(conf)], log,
                         env={**env, "HOST": "127.0.0.1", "PORT": "0"})
        self.url: str | None = None
        self.peak_kib: dict[int, int] = {}  # worker pid -> VmHWM

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.popen.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited with {self.proc.popen.returncode}:\n{self.proc.log_tail()}")
            if self.url is None and (match := LISTENING.search(self.proc.log_tail(100_000))):
                self.url = f"http://127.0.0.1:{match[1]}"
            if self.url and len(self.worker_pids()) >= self.workers and self._healthy():
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name}: not ready within {timeout:g} s:\n{self.proc.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        """The master's children but the dispatcher process: the request workers."""
        return [pid for pid in children(self.proc.pid) if not is_dispatcher(pid)]

    def cpu_ticks(self) -> int:
        """The master, its workers and the dispatcher process: the whole service."""
        return cpu_ticks(self.proc.pid) + sum(cpu_ticks(pid) for pid in children(self.proc.pid))

    def sample_memory(self) -> None:
        for pid in children(self.proc.pid):
            peak = status_kib(pid, "VmHWM")
            if peak is not None:
                self.peak_kib[pid] = max(peak, self.peak_kib.get(pid, 0))


class MemorySampler(threading.Thread):
    """Reads the workers' VmHWM every quarter second, so a worker that dies still counts."""

    def __init__(self, servers: list[Server]):
        super().__init__(daemon=True, name="rss-sampler")
        self.servers, self.halt = servers, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.25):
            for server in self.servers:
                server.sample_memory()

    def stop(self) -> None:
        self.halt.set()
        self.join(2)
        for server in self.servers:
            server.sample_memory()


class FakeMetaProcess:
    """bench/fake_meta_server.py: FakeMeta in its own process, driven over stdin/stdout."""

    def __init__(self, log: Path):
        self.proc = Proc("fake-meta", [sys.executable, str(BENCH / "fake_meta_server.py"), META_TOKEN], log, pipes=True)
        line = self.proc.popen.stdout.readline()
        if not line:
            raise BenchError(f"FakeMeta did not start:\n{self.proc.log_tail()}")
        self.url = json.loads(line)["url"]

    def command(self, name: str) -> dict:
        self.proc.popen.stdin.write(name + "\n")
        self.proc.popen.stdin.flush()
        line = self.proc.popen.stdout.readline()
        if not line:
            raise BenchError(f"FakeMeta died:\n{self.proc.log_tail()}")
        return json.loads(line)


# ---------------------------------------------------------------- configs and databases


def example_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "config.example.yaml").read_text())


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


def backlog(path: Path) -> int:
    con = db_connect(path)
    try:
        return con.execute("SELECT count(*) FROM sends WHERE status IN ('pending', 'sending')").fetchone()[0]
    finally:
        con.close()


def wait_drained(path: Path, limit: float) -> tuple[int, float]:
    """Wait until the dispatcher has no pending or sending row left; (rows left, seconds waited)."""
    start = time.monotonic()
    while True:
        left = backlog(path)
        if left == 0 or time.monotonic() - start >= limit:
            return left, time.monotonic() - start
        time.sleep(0.25)


def footprint(path: Path) -> tuple[int, int, int]:
    """(events, database bytes after a WAL checkpoint, bytes per event); call with no writer running."""
    con = db_connect(path)
    try:
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise BenchError(f"{path}: WAL checkpoint blocked")
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
        wal = Path(f"{path}-wal")
        size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    finally:
        con.close()
    if not events:
        raise BenchError(f"{path}: no event stored")
    return events, size, round(size / events)


# ---------------------------------------------------------------- 1. ingest


@dataclass
class WrkRun:
    target: str
    connections: int
    numbers: dict[str, int]
    wall: float
    wrk_cpu: float
    server_cpu: float
    cores: int
    box_busy: float  # share of the whole box's CPU in use during the run, by anything

    @property
    def others_share(self) -> float:
        """CPU the rest of the box (other people's work) used during the run."""
        return max(0.0, self.box_busy - self.wrk_share - self.server_share)

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
        return self.server_cpu / (self.wall * self.cores)


def run_wrk(server: Server, s: Settings, connections: int, seconds: int, tag: str, template: Path, work: Path) -> WrkRun:
    args = [
        "wrk", f"-t{min(s.wrk_threads, connections)}", f"-c{connections}", f"-d{seconds}s",
        "--timeout", s.wrk_timeout, "-s", str(BENCH / "track.lua"),
        "-H", "Content-Type: application/json", "-H", f"User-Agent: {USER_AGENT}",
        "-H", f"X-Postback-Client-IP: {CLIENT_IP}",
        f"{server.url}/v1/track", "--", tag, str(template),
    ]
    log = work / f"wrk-{tag}.log"
    ticks = os.sysconf("SC_CLK_TCK")
    server_before, box_before = server.cpu_ticks(), box_ticks()
    start = time.monotonic()
    code, cpu = Proc(f"wrk {tag}", args, log).wait4()
    wall = time.monotonic() - start
    server_cpu = (server.cpu_ticks() - server_before) / ticks
    box_after = box_ticks()
    box_busy = (box_after[0] - box_before[0]) / max(1, box_after[1] - box_before[1])
    output = log.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"wrk exited with {code}:\n{output[-2000:]}")
    numbers = parse_wrk(output)
    if errors := wrk_errors(numbers):
        raise BenchError(f"{server.name} at {connections} connections ({tag}): {errors} among {numbers['requests']} "
                         f"requests — a benchmark of failing requests measures nothing.\n"
                         f"server log ({server.proc.log_path}):\n{server.proc.log_tail()}")
    if numbers["requests"] == 0:
        raise BenchError(f"{server.name}: wrk completed no request\n{output[-2000:]}")
    return WrkRun(server.name, connections, numbers, wall, cpu, server_cpu, len(os.sched_getaffinity(0)), box_busy)


@dataclass
class IngestResult:
    runs: list[WrkRun] = field(default_factory=list)
    peak_rss_mib: dict[str, list[float]] = field(default_factory=dict)
    dispatcher_rss_mib: float | None = None  # the dispatcher process (it holds the dispatch lock)
    waits: list[float] = field(default_factory=list)  # seconds the dispatcher took to empty its backlog
    stored: int = 0
    answered: int = 0
    db: tuple[int, int, int] | None = None


def ingest(s: Settings, work: Path, gconf: dict) -> IngestResult:
    folder = work / "ingest"
    folder.mkdir()
    db_path = folder / "postback.db"
    raw = example_config()
    raw["storage"]["database"] = f"sqlite:///{db_path}"
    config_path = write_config(raw, folder / "config.yaml")
    template = work / "purchase.json"
    template.write_text(json.dumps(PURCHASE, separators=(",", ":")))
    result = IngestResult()
    workers = int(gconf["workers"])
    postback = Server("postback", ROOT / "gunicorn.conf.py", child_env(POSTBACK_CONFIG=str(config_path)),
                      work / "postback.log", workers)
    bare = Server("bare", BENCH / "gunicorn_bare.conf.py", child_env(), work / "bare.log", workers)
    sampler = MemorySampler([postback, bare])
    try:
        postback.wait_ready()
        bare.wait_ready()
        sampler.start()
        say(f"ingest: postback at {postback.url}, bare at {bare.url}; {s.runs} run(s) × {s.seconds} s × "
            f"{len(s.connections)} connection count(s) × 2 targets")
        for server in (postback, bare):
            if s.warmup_seconds:
                warm = run_wrk(server, s, s.connections[0], s.warmup_seconds, f"warm-{server.name}", template, work)
                if server is postback:
                    result.answered += warm.numbers["requests"]
        wait_drained(db_path, s.drain_wait)
        for run in range(s.runs):
            for connections in s.connections:
                order = (postback, bare) if run % 2 == 0 else (bare, postback)
                for server in order:
                    tag = f"r{run}-c{connections}-{server.name}"
                    one = run_wrk(server, s, connections, s.seconds, tag, template, work)
                    result.runs.append(one)
                    say(f"  {tag}: {one.rps:,.0f} req/s, p50 {one.ms('p50_us'):.1f} ms, p99 {one.ms('p99_us'):.1f} ms, "
                        f"CPU: wrk {one.wrk_share:.0%}, server {one.server_share:.0%}, others {one.others_share:.0%}")
                    if server is postback:
                        result.answered += one.numbers["requests"]
                        left, waited = wait_drained(db_path, s.drain_wait)
                        if left:
                            raise BenchError(f"the dispatcher still had {left} send(s) pending {s.drain_wait:g} s "
                                             f"after a run (raise BENCH_DRAIN_WAIT?)\n{postback.proc.log_tail()}")
                        result.waits.append(waited)
        sampler.stop()
        leader = flock_holder(Path(f"{db_path}.dispatch.lock"))
        for server in (postback, bare):
            result.peak_rss_mib[server.name] = [kib / 1024 for pid, kib in server.peak_kib.items() if pid != leader]
        if leader in postback.peak_kib:
            result.dispatcher_rss_mib = postback.peak_kib[leader] / 1024
    finally:
        sampler.halt.set()
        postback.proc.stop()
        bare.proc.stop()
    events, size, per_event = result.db = footprint(db_path)
    result.stored = events
    # wrk counts only answered requests; one still in flight when wrk stopped may be stored too.
    if events < result.answered:
        raise BenchError(f"ingest: wrk counted {result.answered} answered requests but only {events} events are "
                         "stored: event ids collided (\"Duplicate event ignored\") or writes were lost")
    return result


# ---------------------------------------------------------------- 2. dispatch


@dataclass
class DispatchRun:
    events: int
    seconds: float
    batches: int
    seed_seconds: float
    db: tuple[int, int, int]
    cpu: dict[str, float] = field(default_factory=dict)  # share of the box during the drain: ours, fake, others

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def requests_per_second(self) -> float:
        return self.batches / self.seconds


def seed(n: int, config) -> None:
    """One event through the real parse and models.record_event, then n - 1 copies of it in SQL."""
    from ingest.canonical import utcnow
    from dialects.channelstack import parse as channelstack
    from dialects.common import ClientContext
    from models import database, record_event
    from ingest.fanout import plan_sends

    site = config.site_for_key(API_KEY)
    body = {**PURCHASE, "event_id": "seed"}
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


def dispatch_once(n: int, meta_url: str, folder: Path, fake_pid: int | None = None) -> tuple[DispatchRun, dict]:
    from delivery import sends as delivery
    from ingest.canonical import utcnow
    from config import parse_config
    from delivery.dispatcher import Dispatcher
    from models import database, open_database
    from platforms import REGISTRY

    import yaml

    folder.mkdir()
    db_path = folder / "postback.db"
    raw = example_config()
    raw["storage"]["database"] = f"sqlite:///{db_path}"
    example_meta = next(d for d in raw["sites"][0]["destinations"] if d["platform"] == "meta")
    raw["sites"][0]["destinations"] = [{**copy.deepcopy(example_meta), "mode": "live", "access_token": META_TOKEN,
                                        "api_base": meta_url}]
    config = parse_config(yaml.safe_dump(raw), {}, platforms=REGISTRY)
    open_database(config.database)
    try:
        started = time.perf_counter()
        seed(n, config)
        seed_seconds = time.perf_counter() - started
        marks: dict[str, float] = {}

        class TimedDispatcher(Dispatcher):
            """Marks the time each batch's outcomes are committed (when _send returns)."""

            def _send(self, *args, **kwargs):
                stop = super()._send(*args, **kwargs)
                marks["last"] = time.perf_counter()
                return stop

        real_claim, real_record = delivery.claim, delivery.record

        def claim(*args, **kwargs):
            marks.setdefault("first", time.perf_counter())
            return real_claim(*args, **kwargs)

        def outcome(real):
            def recorded(*args, **kwargs):
                done = real(*args, **kwargs)
                marks["last"] = time.perf_counter()
                return done
            return recorded

        dispatcher = TimedDispatcher(lambda: config)
        delivery.claim, delivery.record = claim, outcome(real_record)
        cpu_before, fake_before, box_before, wall_before = (
            time.process_time(), cpu_ticks(fake_pid) if fake_pid else 0, box_ticks(), time.monotonic())
        try:
            processed = dispatcher.drain_once(utcnow())
            wall, cores, ticks = time.monotonic() - wall_before, len(os.sched_getaffinity(0)), os.sysconf("SC_CLK_TCK")
            box_after = box_ticks()
            cpu = {
                "dispatcher": (time.process_time() - cpu_before) / (wall * cores),
                "fake": ((cpu_ticks(fake_pid) - fake_before) / ticks if fake_pid else 0) / (wall * cores),
                "box": (box_after[0] - box_before[0]) / max(1, box_after[1] - box_before[1]),
            }
            cpu["others"] = max(0.0, cpu["box"] - cpu["dispatcher"] - cpu["fake"])
        finally:
            delivery.claim, delivery.record = real_claim, real_record
            if hasattr(dispatcher, "close"):
                dispatcher.close()
            else:  # a dispatch.py from before Dispatcher.close()
                dispatcher._pool.shutdown(wait=True)
        statuses = dict(database.execute_sql("SELECT status, count(*) FROM sends GROUP BY status").fetchall())
        if statuses != {"sent": n}:
            raise BenchError(f"dispatch: expected all {n} sends `sent`, found {statuses} (processed {processed})")
        if "first" not in marks or "last" not in marks:
            raise BenchError("dispatch: no claim or no outcome was timed")
        seconds = marks["last"] - marks["first"]
    finally:
        database.close()
    return DispatchRun(n, seconds, 0, seed_seconds, footprint(db_path), cpu), processed


def dispatch(s: Settings, work: Path) -> list[DispatchRun]:
    fake = FakeMetaProcess(work / "fake-meta.log")
    runs: list[DispatchRun] = []
    try:
        say(f"dispatch: {s.dispatch_runs} run(s) of {s.events:,} events to FakeMeta at {fake.url} (own process)")
        for run in range(s.dispatch_runs):
            fake.command("reset")
            folder = work / f"dispatch-{run}"
            one, _ = dispatch_once(s.events, fake.url, folder, fake.proc.pid)
            got = fake.command("stats")
            ok = got["statuses"] == {"200": got["requests"]}
            if not ok or got["events"] != s.events or got["distinct_event_ids"] != s.events or got["test_events"]:
                raise BenchError(f"dispatch: FakeMeta should have received {s.events} distinct events in 200-answered "
                                 f"requests, it has {got}")
            one.batches = got["requests"]
            runs.append(one)
            say(f"  run {run}: seeded in {one.seed_seconds:.1f} s, drained in {one.seconds:.2f} s: "
                f"{one.events_per_second:,.0f} events/s in {one.batches} requests ({one.requests_per_second:.1f}/s); "
                f"CPU: dispatcher {one.cpu['dispatcher']:.0%}, FakeMeta {one.cpu['fake']:.0%}, "
                f"others {one.cpu['others']:.0%}")
            if run < s.dispatch_runs - 1:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        fake.proc.stop()
    return runs


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
    return len(json.dumps({**PURCHASE, "event_id": "r0-c16-postback-t1-12345"}, separators=(",", ":")))


def report(s: Settings, gconf: dict, ing: IngestResult, disp: list[DispatchRun], started: datetime,
           load: tuple[float, float, float], elapsed: float) -> str:
    cores = len(os.sched_getaffinity(0))
    dry = [d["platform"] for d in example_config()["sites"][0]["destinations"] if d.get("mode") == "dry"]
    lines = [
        f"## make bench — {started:%Y-%m-%d %H:%M} UTC, {git_head()}, took {elapsed:.0f} s",
        "",
        f"- Box: {cores} cores shared with other work (load average {load[0]:.2f} at start); Python "
        f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}; {wrk_version()}, {s.wrk_threads} threads.",
        f"- Servers: gunicorn.conf.py as `make run` uses it ({gconf['worker_class']}, {gconf['workers']} workers × "
        f"{gconf['threads']} threads, keepalive {gconf['keepalive']} s, access log {'to stdout' if gconf['accesslog'] == '-' else gconf['accesslog'] or 'off'}) "
        f"for both Postback and the bare Flask endpoint (bench/bare.py).",
        f"- Ingest: {s.runs} run(s) × {s.seconds} s per connection count, Postback and bare alternating, after a "
        f"{s.warmup_seconds} s warm-up each; a {body_bytes()}-byte purchase, unique event_id per request. Postback "
        f"runs the example config with the database in a temp folder: its {len(dry)} destinations "
        f"({', '.join(dry)}) are in dry mode, so the dispatcher (in the worker holding the lock) builds and records "
        f"every payload, {len(dry)} per event, but sends nothing; each Postback run starts with the backlog empty.",
        f"- Dispatch: {s.events:,} events stored straight into a fresh database, a live Meta destination pointed "
        f"at FakeMeta in its own process, Dispatcher.drain_once timed from the first claim to the last recorded "
        f"outcome.",
        "",
        "| Figure | Median | Min | Max | Runs | Notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    by = {}
    for one in ing.runs:
        by.setdefault((one.target, one.connections), []).append(one)
    for c in s.connections:
        pb, bare = by[("postback", c)], by[("bare", c)]
        for target, runs in (("Postback", pb), ("bare Flask", bare)):
            cpu_note = (f"share of the box's CPU: server {statistics.median(r.server_share for r in runs):.0%}, "
                        f"wrk {statistics.median(r.wrk_share for r in runs):.0%}, "
                        f"other work {statistics.median(r.others_share for r in runs):.0%}")
            lines.append(table_row(f"Ingest {target}, {c} conns: requests/s", [r.rps for r in runs], "", cpu_note))
            lines.append(table_row(f"Ingest {target}, {c} conns: p50", [r.ms("p50_us") for r in runs], "ms"))
            p99_note = "target ≤ 50 ms at 16 conns" if target == "Postback" and c == 16 else ""
            lines.append(table_row(f"Ingest {target}, {c} conns: p99", [r.ms("p99_us") for r in runs], "ms", p99_note))
        ratios = [p.rps / b.rps for p, b in zip(pb, bare)]
        lines.append(table_row(f"Ingest Postback / bare, {c} conns (requests/s)", ratios, "x",
                               "paired runs; target ≥ 0.7×"))
    for c in s.connections:
        shares = [r.wrk_share for r in ing.runs if r.connections == c]
        lines.append(table_row(f"Load generator (wrk) CPU share, {c} conns", shares, "%",
                               "wrk CPU time ÷ (wall × cores), all targets"))
    if ing.waits:
        lines.append(table_row("Ingest: seconds the dispatcher took to empty its backlog after a Postback run",
                               ing.waits, "", "dry mode: payload built and recorded, nothing sent"))
    eps = [r.events_per_second for r in disp]
    share = {key: statistics.median(r.cpu[key] for r in disp) for key in ("dispatcher", "fake", "others")}
    lines.append(table_row("Dispatch: events/s (first claim → last recorded outcome)", eps, "",
                           f"{s.events:,} events, all `sent`, FakeMeta got each once; share of the box's CPU: "
                           f"dispatcher {share['dispatcher']:.0%}, FakeMeta {share['fake']:.0%}, "
                           f"other work {share['others']:.0%}"))
    lines.append(table_row("Dispatch: requests/s (batches FakeMeta received)", [r.requests_per_second for r in disp], "",
                           f"{statistics.median(r.batches for r in disp):.0f} batches per run"))
    base = statistics.median(r.rps for r in by[("postback", s.connections[0])])
    lines.append(table_row(f"Dispatch ÷ ingest rate (Postback, {s.connections[0]} conns)", [e / base for e in eps], "x",
                           "target ≥ 10×; against the ingest median"))
    for name, label in (("postback", "Postback"), ("bare", "bare Flask")):
        peaks = ing.peak_rss_mib.get(name) or []
        if peaks:
            note = "VmHWM of each worker (one value per worker) over the ingest runs"
            if name == "postback" and ing.dispatcher_rss_mib is not None:
                note += f"; the dispatcher process beside them: {ing.dispatcher_rss_mib:.1f} MiB"
            lines.append(table_row(f"Footprint: peak RSS of a {label} gunicorn worker", peaks, "MiB", note))
    events, size, per_event = ing.db
    lines.append(table_row("Footprint: database bytes per event after ingest", [per_event], "",
                           f"{events:,} events, {size / 2**20:.1f} MiB incl. WAL after checkpoint; sends skipped "
                           f"(dry mode) with payload kept"))
    lines.append(table_row("Footprint: database bytes per event after dispatch", [r.db[2] for r in disp], "",
                           f"{disp[-1].db[0]:,} events, {disp[-1].db[1] / 2**20:.1f} MiB; sends `sent` with payload "
                           f"and response excerpt kept"))
    return "\n".join(line for line in lines if line is not None) + "\n"


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
        say(f"make bench: working in {work}")
        ing = ingest(settings, work, gconf)
        disp = dispatch(settings, work)
        text = report(settings, gconf, ing, disp, started, load, time.monotonic() - clock)
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        settings.out.write_text(text)
        print(text, end="", flush=True)
        say(f"written to {settings.out}")
        ok = True
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure: say so loudly, leave no stale table
        text = str(exc) if isinstance(exc, BenchError) else traceback.format_exc()
        bar = "!" * 72
        say(f"\n{bar}\nBENCH FAILED: {text}\n{bar}")
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
