"""Postback's command line: `python cli.py <command>` (check-config, dispatch, drain, resume, retry-now, replay, purge,
stats, ...)."""
from __future__ import annotations

import io
import sys
from contextlib import contextmanager
from importlib import import_module
from importlib.util import find_spec

import click

import dialects
import logs
from config import Config, ConfigError, load_config
from models import open_database, write_turn
from storage.migrations import SchemaError, status, upgrade
from platforms import REGISTRY


@click.group()
def cli():
    """Postback's command line."""
    logs.configure()


@cli.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None):
    """Validate a config file without starting anything."""
    try:
        config = _load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    destinations = config.destinations()
    click.echo(f"{config.path}: OK — {len(config.sites)} site(s), {len(destinations)} enabled destination(s)")


@cli.command("reload-config")
def reload_config():
    """Check the config file, then touch it: every running process re-reads it within seconds."""
    import os

    try:
        config = _load()
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    os.utime(config.path)
    destinations = config.destinations()
    click.echo(f"{config.path}: OK — {len(config.sites)} site(s), {len(destinations)} enabled destination(s); "
               "every process re-reads it within seconds")


@cli.command()
@click.argument("path")
def backup(path: str):
    """Copy the live SQLite database to PATH, consistently, while Postback runs (PostgreSQL: use pg_dump)."""
    from storage.backup import BackupError, backup as copy, sqlite_file

    try:
        source = sqlite_file(_load().database)
        with _progress(path, unit="B", plain=None) as progress:
            made = copy(source, path, progress)
    except BackupError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{made.path}: {made.pages} page(s), {made.size} bytes, integrity ok")


@cli.command()
@click.argument("destination")
def resume(destination: str):
    """Resume a paused destination, e.g. `resume shop/meta`."""
    from delivery.sends import resume_destination

    config = _load()
    _open(config)
    if resume_destination(destination):
        click.echo(f"{destination}: resumed")
    elif config.destination(destination) is None:
        _missing(f"no destination {destination!r} in {config.path} (site/name, e.g. shop/meta)")
    else:
        click.echo(f"{destination}: was not paused")


@cli.command()
@click.option("--send", "send_id", type=int, help="Replay one failed send by its id.")
@click.option("--destination", help="Replay every failed send of a destination, e.g. shop/meta.")
def replay(send_id: int | None, destination: str | None):
    """Queue failed sends again; the payload is rebuilt from the stored event with the current config."""
    from delivery.sends import replay_failed

    if (send_id is None) == (destination is None):
        raise click.UsageError("give exactly one of --send or --destination")
    from models import Send

    config = _load()
    _open(config)
    count = replay_failed(send_id=send_id, destination=destination)
    if count == 0 and send_id is not None and Send.get_or_none(Send.id == send_id) is None:
        _missing(f"no send {send_id}")
    if count == 0 and destination is not None and config.destination(destination) is None:
        _missing(f"no destination {destination!r} in {config.path} (site/name, e.g. shop/meta)")
    click.echo(f"{count} send(s) queued again")


@cli.command("retry-now")
@click.argument("destination")
def retry_now(destination: str):
    """Make a destination's backing-off sends due now, e.g. `retry-now shop/meta` once its outage is over."""
    from delivery import backlog
    from ingest.canonical import utcnow

    config = _load()
    _open(config)
    if config.destination(destination) is None:
        _missing(f"no destination {destination!r} in {config.path} (site/name, e.g. shop/meta)")
    count = backlog.retry_now(destination, utcnow())
    paused = next((p for p in backlog.paused() if p.destination == destination), None)
    click.echo(f"{destination}: {count} backing-off send(s) due now"
               + (f" (paused: {paused.paused_reason}; `resume {destination}` to send them)" if paused else ""))


@cli.command()
@click.option("--parent", type=int, help="Stop when this process (the gunicorn master that started it) is gone.")
def dispatch(parent: int | None):
    """Run the dispatcher in the foreground until SIGTERM (what `make run` starts beside the web workers)."""
    from delivery.process import lock_problem, lower_priority, run
    from models import unwritable

    lower_priority()
    config = _load()
    problem = unwritable(config.database) or lock_problem(config)
    if problem:
        click.echo(problem, err=True)
        sys.exit(1)
    from delivery.dispatcher import CONNECTION_PRAGMAS

    _open(config, CONNECTION_PRAGMAS)
    from config import ConfigWatch
    from console import metrics

    in_force = {"config": config}  # the file is re-read when it changes, as in every web worker
    ConfigWatch(config, lambda new: in_force.update(config=new), platforms=REGISTRY,
                counted=metrics.config_reloaded).start()
    sys.exit(run(lambda: in_force["config"], parent=parent))


@cli.command("drain")
def drain():
    """Run one dispatch pass now and print what each destination did."""
    from delivery.dispatcher import CONNECTION_PRAGMAS, Dispatcher

    config = _load()
    _open(config, CONNECTION_PRAGMAS)
    for key, count in sorted(Dispatcher(lambda: config).drain_once().items()):
        click.echo(f"{key}: {count} send(s) processed")


@cli.command()
@click.argument("destination")
@click.option("--since", help="Only events of the last DURATION (s, m, h or d, e.g. 7d), inside the platform's window.")
@click.option("--dry-run", is_flag=True, help="Print the counts and change nothing.")
def backfill(destination: str, since: str | None, dry_run: bool):
    """Queue sends to a destination added later for the stored events it would have taken, e.g. `backfill shop/meta`."""
    from delivery.backfill import BackfillError, LEFT_OUT, destination_to_backfill, parse_since
    from delivery.backfill import backfill as queue_backfill
    from ingest.canonical import utcnow

    try:
        window = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    config = _load()
    _open(config)
    try:
        dest = destination_to_backfill(config, destination)
    except BackfillError as exc:
        _missing(str(exc))
    with _progress(destination) as progress:
        outcome = queue_backfill(dest, utcnow(), window, dry_run, progress)
    since_text = outcome.since.isoformat(timespec="seconds")
    click.echo(f"{destination}: dry run, {outcome.queued} send(s) would be queued, events since {since_text}"
               if dry_run else f"{destination}: {outcome.queued} send(s) queued, events since {since_text}")
    for reason, count in outcome.left_out.items():
        if count:
            click.echo(f"left out, {LEFT_OUT[reason]}: {count}")


@contextmanager
def _progress(label: str, unit: str = "event", plain: str | None = "event(s) judged"):
    """A progress bar on a terminal (tqdm); elsewhere a plain line on stderr per step, unless `plain` is None."""
    if not sys.stderr.isatty():
        yield lambda done, total: plain and click.echo(f"{label}: {done}/{total} {plain}", err=True)
        return
    from tqdm import tqdm

    bar = tqdm(desc=label, unit=unit, unit_scale=unit == "B", file=sys.stderr)

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield show
    finally:
        bar.close()


@cli.command()
def purge():
    """Delete what every store keeps past storage.retention_days (events once their sends are final)."""
    from storage import retention
    from ingest.canonical import utcnow

    config = _load()
    _open(config)
    with _progress("purge", plain="event(s) removed") as progress:
        removed = retention.purge(config.retention_days, utcnow(), progress)
    click.echo("removed " + ", ".join(f"{table} {n}" for table, n in removed.items()))


@cli.command()
@click.option("--email", help="The person's email address, as your shop knows it.")
@click.option("--phone", help="The person's phone number (national numbers read in each site's default_country).")
@click.option("--site", "site_id", help="Only this site (default: every site).")
def erase(email: str | None, phone: str | None, site_id: str | None):
    """Erase a person (GDPR) by email or phone from every store: events, sends, profiles, subscribers, leads, visits."""
    from storage import retention
    from ingest.canonical import utcnow

    if bool(email) == bool(phone):
        _missing("give one of --email or --phone")
    config = _load()
    sites = [s for s in config.sites if site_id in (None, s.id)]
    if not sites:
        _missing(f"no site {site_id!r} in {config.path}")
    try:  # every site's person first: a value one site's country refuses erases nothing anywhere
        people = [retention.person_named(site, "erase command", email, phone) for site in sites]
    except ValueError as exc:
        _missing(f"nothing erased: {exc}")
    _open(config)
    lines = []
    # A bar on a terminal; piped, only the plain lines a script reads.
    with click.progressbar(people, label="erasing", file=sys.stderr if sys.stderr.isatty() else io.StringIO()) as bar:
        for person in bar:
            erased = retention.erase(person, utcnow())
            lines.append(f"site {person.site}: erased " + ", ".join(f"{table} {n}" for table, n in erased.items()))
    click.echo("\n".join(lines))


@cli.command()
def stats():
    """Events per site, sends per destination and status, paused and backing-off destinations, the rows of every table."""
    from delivery import backlog
    from ingest.canonical import utcnow
    from storage import retention

    _open(_load())
    now = utcnow()
    counts = retention.stats()
    for site, n in sorted(counts["events"].items()):
        click.echo(f"site {site}: {n} event(s)")
    for destination, by_status in sorted(counts["sends"].items()):
        click.echo(f"{destination}: " + ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())))
    for state in backlog.paused():
        click.echo(f"paused {state.destination} since {state.paused_at:%Y-%m-%d %H:%M:%S}Z: {state.paused_reason}")
    for waiting in backlog.backing_off(now):
        seconds = max(0, round((waiting.next_attempt_at - now).total_seconds()))
        click.echo(f"backing off {waiting.destination}: {waiting.sends} send(s), next attempt at "
                   f"{waiting.next_attempt_at:%Y-%m-%d %H:%M:%S}Z (in {seconds} s)")
    click.echo("rows: " + ", ".join(f"{table} {n}" for table, n in counts["rows"].items()))


@cli.command()
@click.option("--status", "show_status", is_flag=True, help="Print the schema's version and pending steps; change nothing.")
def migrate(show_status: bool):
    """Apply the pending schema steps (the app applies them at start-up too) and print each one."""
    db = open_database(_load().database, migrate=False)
    try:
        where = status(db)
        if show_status:
            click.echo(f"schema version {where.version} of {where.latest}: "
                       + (f"{len(where.pending)} step(s) pending" if where.pending else "up to date"))
            for step in where.pending:
                click.echo(f"pending {step.version}: {step.says}")
            return
        applied = upgrade(db, write_turn, say=click.echo)
    except SchemaError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"schema at version {status(db).version}: {len(applied)} step(s) applied")


@cli.command("generate-key")
@click.option("--browser", is_flag=True, help="A publishable key for pages, for a site's `browser_keys`.")
def generate_key(browser: bool):
    """Print a new random API key to put in a site's `keys` (or, with --browser, its `browser_keys`)."""
    import secrets

    from config import BROWSER_KEY_PREFIX

    click.echo(f"{BROWSER_KEY_PREFIX if browser else 'key_'}{secrets.token_urlsafe(24)}")


def _load(path: str | None = None) -> Config:
    """The config at `path` (else POSTBACK_CONFIG's), each destination checked by its platform."""
    return load_config(path, platforms=REGISTRY)


def _open(config: Config, pragmas: dict | None = None) -> None:
    try:
        open_database(config.database, pragmas=pragmas)
    except SchemaError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _missing(message: str) -> None:
    """A verb named something that does not exist: say so, and fail, so a script notices."""
    click.echo(message, err=True)
    sys.exit(1)


def _dialect_commands() -> None:
    """A dialect adds its own commands in `dialects/<name>/commands.py` (a COMMANDS tuple)."""
    for package in dialects.packages():
        if find_spec(f"{package.__name__}.commands") is not None:
            for command in import_module(f"{package.__name__}.commands").COMMANDS:
                cli.add_command(command)


_dialect_commands()


if __name__ == "__main__":
    cli()
