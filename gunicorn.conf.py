"""gunicorn settings for `make run` (and `make bench`): gthread workers; the master keeps the dispatcher running
as a process of its own (docs/delivery.md#the-dispatcher-process)."""
import os
import shutil
import sys
import tempfile

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
wsgi_app = "app:serve()"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "8"))
accesslog = os.environ.get("ACCESS_LOG", "-")
# Path without the query string (the pixel's `params` carries an email) and no client IP: no personal data.
access_log_format = '"%(m)s %(U)s" %(s)s %(B)s %(M)sms'
# Redacts a path segment that is an email or phone, and escapes control characters (a forged log line).
logger_class = "logs.AccessLogger"
keepalive = 5
# The pixel carries its data in the query string; gunicorn's default refuses request lines over 4 KB.
limit_request_line = 8190
# gunicorn's control socket lives at one path per user: a second instance (a bench beside `make run`) would clash.
control_socket_disable = True
# POSTBACK_DISPATCHER=off serves without delivering (a box whose dispatcher runs under systemd: `cli.py dispatch`).
DISPATCHER = os.environ.get("POSTBACK_DISPATCHER", "on") != "off"
CLI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli.py")


def on_starting(server):
    """Before anything is served: every process will count into one metrics folder that a scrape sums
    (console/metrics.py), emptied here; a database or a lock file that cannot be written stops start-up."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):  # only prometheus_client's files: the folder may hold others
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="postback-metrics-")
    from config import ConfigError, load_config
    from delivery.process import lock_problem
    from models import unwritable
    from platforms import REGISTRY

    try:
        config = load_config(platforms=REGISTRY)
    except ConfigError:
        return  # the workers name each problem and stop gunicorn (app.serve)
    problem = unwritable(config.database) or (lock_problem(config) if DISPATCHER else None)
    if problem:
        print(f"postback: {problem}", file=sys.stderr)
        sys.exit(1)


def when_ready(server):
    """Start the dispatcher beside the workers; the master starts it again whenever it dies."""
    if not DISPATCHER:
        return
    import logs
    from config import load_config
    from delivery.process import STOP_MARGIN, stop_timeout
    from delivery.supervisor import Supervisor
    from platforms import REGISTRY

    logs.configure()
    config = load_config(platforms=REGISTRY)
    command = [sys.executable, CLI, "dispatch", "--parent", str(os.getpid())]
    server.postback_dispatcher = Supervisor(command, stop_wait=stop_timeout(config) + STOP_MARGIN).start()


def on_reload(server):
    """A reload (SIGHUP) reads the config again: the dispatcher too."""
    supervisor = getattr(server, "postback_dispatcher", None)
    if supervisor is not None:
        supervisor.restart()


def child_exit(server, worker):
    """A worker that is gone leaves its counts behind, and no live gauge of its own."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Stop the dispatcher: SIGTERM, it finishes or hands back its batch, within a bounded wait. The metrics folder
    made at start goes with the service; one named by PROMETHEUS_MULTIPROC_DIR stays."""
    supervisor = getattr(server, "postback_dispatcher", None)
    if supervisor is not None:
        supervisor.stop()
    if os.path.basename(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")).startswith("postback-metrics-"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
