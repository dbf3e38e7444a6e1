"""The operator CLI: ``message-metrics --help``."""

from __future__ import annotations

import asyncio
import functools
import gc
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, get_args, get_origin

import click
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from strawberry.printer import print_schema

from graph.demo import read_tokens, tokens_file, write_tokens
from graph.embedded import EmbeddedDatabase, EmbeddedDatabaseError, describe_exit, is_reachable
from graph.logs import configure_logging
from graph.settings import Settings
from resolvers import Database, MetricsError, ensure_indexes, open_client
from resolvers.admin import (
    Rotated,
    create_account,
    create_instance,
    list_accounts,
    list_instances,
    rotate,
    set_ignore_group_messages,
)
from resolvers.rollups.consumer import RollupConsumer
from resolvers.rollups.lease import read_lease
from resolvers.rollups.source import RollupSource, SourceSetting, stored_source_status
from resolvers.rollups.state import STATE_COLLECTION
from resolvers.seed import DemoTokens, add_messages, seed_demo, seed_messages

__all__ = ["BadSetting", "load_settings", "main"]

T = TypeVar("T")
P = ParamSpec("P")

#: What ``seed`` adds to each instance when not told ``--messages``.
SEED_ADD = 500
#: uvicorn's exit status when the application does not start.
_STARTUP_FAILURE = 3


class BadSetting(click.ClickException):
    """A setting in the environment that does not parse: one line, exit status 2."""

    exit_code = 2


def load_settings() -> Settings:
    """The settings from the environment; a bad one names its variable and what it takes."""
    try:
        return Settings()
    except ValidationError as exc:
        raise BadSetting("; ".join(_explain(error) for error in exc.errors())) from None


def _explain(error: ErrorDetails) -> str:
    if not error["loc"]:
        return error["msg"]
    name = str(error["loc"][0])
    return f"{name.upper()}={error['input']!r} is not valid: expected {_allowed(name)}"


def _allowed(name: str) -> str:
    """What the setting ``name`` takes, read from its type and bounds."""
    field = Settings.model_fields.get(name)
    if field is None:
        return "a valid value"
    annotation = field.annotation
    members = get_args(annotation)
    optional = type(None) in members and get_origin(annotation) is not Literal
    core = next(m for m in members if m is not type(None)) if optional else annotation
    if get_origin(core) is Literal:
        text = "one of " + ", ".join(str(choice) for choice in get_args(core))
    elif core is bool:
        text = "true or false"
    elif core is int:
        text = "an integer" + _bounds(field.metadata)
    else:
        text = f"a {getattr(core, '__name__', 'valid value')}"
    return text + (", or unset" if optional else "")


def _bounds(metadata: list[Any]) -> str:
    def bound(kind: str) -> Any:
        return next((getattr(m, kind) for m in metadata if hasattr(m, kind)), None)

    low, above, high = bound("ge"), bound("gt"), bound("le")
    if low is not None and high is not None:
        return f" from {low} to {high}"
    words = [
        f"above {above}" if above is not None else "",
        f"of at least {low}" if low is not None else "",
        f"{'and ' if above is not None else 'of '}at most {high}" if high is not None else "",
    ]
    return "".join(f" {word}" for word in words if word)


def _with_settings(command: Callable[Concatenate[Settings, P], T]) -> Callable[P, T]:
    """Hand the command the settings, read when it runs: a bad one ends it (status 2),
    while ``--help`` and the commands that need none work whatever the environment."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return command(load_settings(), *args, **kwargs)

    return run


@dataclass(frozen=True, slots=True)
class _Target:
    uri: str
    embedded: bool
    #: The embedded database this command started (None: reused, or MONGODB_URI).
    started: EmbeddedDatabase | None = None


@contextmanager
def _database(settings: Settings) -> Iterator[_Target]:
    """``MONGODB_URI``; else the embedded database, reused when it already runs (under
    ``make run``, say) or started for the duration of the command."""
    if settings.mongodb_uri:
        yield _Target(uri=settings.mongodb_uri, embedded=False)
        return
    embedded = EmbeddedDatabase(data_dir=settings.embedded_data_dir, port=settings.embedded_port)
    if is_reachable(embedded.uri):
        yield _Target(uri=embedded.uri, embedded=True)
        return
    try:
        embedded.start()
    except EmbeddedDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield _Target(uri=embedded.uri, embedded=True, started=embedded)
    finally:
        embedded.stop()


async def _with_db(settings: Settings, uri: str, action: Callable[[Database], Awaitable[T]]) -> T:
    client = open_client(
        uri,
        server_selection_timeout_ms=settings.mongodb_server_selection_timeout_ms,
    )
    async with client:
        db = client[settings.mongodb_database]
        await ensure_indexes(db)
        return await action(db)


def _run(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``action`` against the configured database; domain errors end the command."""
    with _database(settings) as target:
        return _run_on(settings, target.uri, action)


def _run_on(settings: Settings, uri: str, action: Callable[[Database], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_db(settings, uri, action))
    except MetricsError as exc:
        raise click.ClickException(exc.message) from exc


def _now() -> datetime:
    return datetime.now(UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Message metrics: GraphQL and REST metrics for WhatsApp gateway instances.

    Configuration comes from the environment (MONGODB_URI, MONGODB_DATABASE, ...);
    without MONGODB_URI every command uses the embedded database.
    """
    configure_logging("error")  # operators read the command's own output; serve logs fully


@main.command()
@click.option("--host", help="Interface to listen on (default: HOST or 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, 65535), help="Port to listen on (default: PORT or 8000)."
)
@_with_settings
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the API; without MONGODB_URI, on the embedded database with demo data.

    The port is taken first: when it is not free, nothing else happens (no database is
    started, no token or data changes).
    """
    import uvicorn

    from graph.app import create_app

    settings = settings.model_copy(
        update={"host": host or settings.host, "port": settings.port if port is None else port}
    )
    listener = _listen(settings.host, settings.port)
    with closing(listener), _database(settings) as target:
        if target.embedded:
            tokens = _embedded_demo(settings, target.uri, messages=settings.demo_messages)
            _print_demo(tokens, kept_in=tokens_file(settings.embedded_data_dir))
        served: dict[str, object] = {"mongodb_uri": target.uri}
        if target.embedded and settings.rollups_reconcile_minutes is None:
            served["rollups_reconcile_minutes"] = 0  # unset: no reconcile on the embedded one
        app = create_app(settings.model_copy(update=served))
        if target.started is not None:  # /health says why, should it end on its own
            app.state.embedded = target.started
            target.started.watch()
        base = f"http://{settings.host}:{listener.getsockname()[1]}"
        click.echo(f"Dashboard: {base}/")
        click.echo(f"GraphiQL: {base}/graphql")
        # uvicorn re-raises SIGTERM once it has shut down; make that unwind this block so
        # the embedded database is stopped too, instead of the process dying on the spot.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,  # the app logs each request as JSON
            **_forwarding(settings),
        )
        server = uvicorn.Server(config)
        _collect_less()
        server.run(sockets=[listener])
        if not server.started:
            raise SystemExit(_STARTUP_FAILURE)


#: The collector's thresholds while serving (CPython's are 700, 10, 10).
GC_THRESHOLDS = (10_000, 10, 10)


def _collect_less() -> None:
    """Fewer cyclic collections, none of them over what start-up built.

    A series of 169 hourly points allocates ~15,000 objects; with a collection every 700
    allocations, each request's half-built answer was carried into the older generations,
    and a full collection (~50-70 ms over every live object) landed on about one request
    in twenty. Start-up's objects (modules, the schema) are frozen out of every
    collection, and the youngest generation is collected every 10,000 allocations. On
    the benchmark's 1M instance, 800 requests: time collecting 1.7 s -> 0.17 s, the HOUR
    series' p95 75 -> 21 ms (p50 16.6 -> 15.6 ms)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a one-line error when it is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it a kept-alive connection waits ~40 ms per
    # response (Nagle's algorithm against the client's delayed ACK): uvicorn sets it only
    # on the sockets it opens itself, not on one it is handed.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({reason}); nothing was started or changed"
        ) from exc
    return sock


def _forwarding(settings: Settings) -> dict[str, Any]:
    """Trust ``X-Forwarded-For``/``-Proto`` only from ``FORWARDED_ALLOW_IPS`` (the proxy's
    addresses); unset, trust none: uvicorn's default trusts loopback, where any local
    caller could pick a fresh client address, and so a fresh rate-limit bucket, per request."""
    if not settings.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _embedded_demo(
    settings: Settings, uri: str, *, messages: int, renew: bool = False
) -> DemoTokens:
    """The demo tokens of the embedded database, kept in its data folder: the same at
    every start, replaced only when ``renew`` or when the kept ones no longer match."""
    path = tokens_file(settings.embedded_data_dir)
    known = read_tokens(path)
    tokens = _run_on(
        settings,
        uri,
        lambda db: seed_demo(
            db=db, now=_now(), messages=messages, known=known, renew=renew or known is None
        ),
    )
    assert tokens is not None  # known or renewed: always something to show
    if tokens != known:
        write_tokens(path, tokens)
        if known is not None and not renew:
            click.echo(f"note: the tokens kept in {path} no longer matched; replaced them")
    return tokens


def _print_demo(tokens: DemoTokens, *, kept_in: Path | None) -> None:
    if kept_in is None:
        click.echo("Demo account (shown once: only their hashes are stored):")
    else:
        click.echo(
            f"Demo account (tokens kept in {kept_in}; `message-metrics demo --new-tokens` "
            "replaces them):"
        )
    click.echo(f"  account token (all instances): {tokens.account}")
    for name, token in tokens.instances.items():
        click.echo(f"  instance token for {name!r}: {token}")


def _demo_tokens(settings: Settings, target: _Target, *, messages: int, renew: bool) -> None:
    """Print the demo tokens (the demo created if missing), replacing them if ``renew``."""
    if target.embedded:
        tokens = _embedded_demo(settings, target.uri, messages=messages, renew=renew)
        _print_demo(tokens, kept_in=tokens_file(settings.embedded_data_dir))
        return
    shown = _run_on(
        settings,
        target.uri,
        lambda db: seed_demo(db=db, now=_now(), messages=messages, known=None, renew=renew),
    )
    if shown is None:
        click.echo(
            "The demo account exists; its tokens were shown when they were made "
            "(`message-metrics demo --new-tokens` replaces them)."
        )
    else:
        _print_demo(shown, kept_in=None)


@main.command()
@click.option(
    "--new-tokens",
    is_flag=True,
    help="Replace every demo token; the old ones stop working at once.",
)
@_with_settings
def demo(settings: Settings, new_tokens: bool) -> None:
    """Print the demo account's tokens, creating the demo account on first use.

    With the embedded database they are kept in its data folder (EMBEDDED_DATA_DIR,
    mode 0600) and stay the same across restarts until --new-tokens.
    """
    with _database(settings) as target:
        _demo_tokens(settings, target, messages=settings.demo_messages, renew=new_tokens)


class _Stopped(Exception):
    """A signal asked the foreground command to stop."""


@contextmanager
def _stopped_by(*signals: signal.Signals) -> Iterator[None]:
    """Within the block, ``signals`` raise ``_Stopped`` (as Ctrl-C raises KeyboardInterrupt),
    once: a second one while stopping is ignored."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        raise _Stopped(signal.Signals(signum).name)

    previous = {each: signal.signal(each, stop) for each in signals}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


@main.command("embedded-db")
@_with_settings
def embedded_db(settings: Settings) -> None:
    """Run the embedded database in the foreground (Ctrl-C, SIGTERM or SIGHUP stops it).

    `serve` and the other commands use it when it already runs on EMBEDDED_PORT, so it
    can be stopped and restarted while the service keeps running.
    """
    embedded = EmbeddedDatabase(data_dir=settings.embedded_data_dir, port=settings.embedded_port)
    if is_reachable(embedded.uri):
        raise click.ClickException(f"a database already answers on port {embedded.port}")
    with _stopped_by(signal.SIGTERM, signal.SIGHUP):
        try:
            embedded.start()
            click.echo(
                f"embedded database on {embedded.uri} (data in {settings.embedded_data_dir})"
            )
            code = embedded.wait()
        except EmbeddedDatabaseError as exc:
            raise click.ClickException(str(exc)) from exc
        except KeyboardInterrupt:
            click.echo("stopping (Ctrl-C)")
            return
        except _Stopped as stopped:
            click.echo(f"stopping ({stopped})")
            return
        finally:
            embedded.stop()
    raise click.ClickException(describe_exit(code))


@main.command("export-schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here.")
def export_schema(output: Path | None) -> None:
    """Print the GraphQL schema (SDL), as `strawberry export-schema graph:schema` does."""
    from graph.query import schema

    sdl = print_schema(schema)
    if output is None:
        click.echo(sdl)
    else:
        output.write_text(sdl + "\n", encoding="utf-8")


@main.group()
def accounts() -> None:
    """Create and list accounts."""


@accounts.command("create")
@click.argument("name")
@_with_settings
def accounts_create(settings: Settings, name: str) -> None:
    """Create an account and print its token (shown only this once)."""
    created = _run(settings, lambda db: create_account(db=db, name=name, now=_now()))
    click.echo(f"account {created.name!r} created, id {created.id}")
    click.echo(f"token (store it now, it is not shown again): {created.token}")


@accounts.command("list")
@_with_settings
def accounts_list(settings: Settings) -> None:
    """List accounts: name, number of instances, when created, id (never a token)."""
    rows = _run(settings, lambda db: list_accounts(db=db))
    if not rows:
        click.echo("no accounts")
        return
    width = max(len("NAME"), *(len(row.name) for row in rows))
    click.echo(f"{'NAME':<{width}}  INSTANCES  {'CREATED':<20}  ID")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M UTC") if row.created_at else "-"
        demo = "  (demo)" if row.demo else ""
        click.echo(f"{row.name:<{width}}  {row.instances:>9}  {created:<20}  {row.id}{demo}")


@main.group()
def tokens() -> None:
    """Replace tokens."""


@tokens.command("rotate")
@click.option("--account", required=True, help="The account: id, or its unique name.")
@click.option("--instance", help="One of its instances (default: the account's own token).")
@_with_settings
def tokens_rotate(settings: Settings, account: str, instance: str | None) -> None:
    """Give an account (or one of its instances) a new token and print it once; the old
    token stops working at once."""
    with _database(settings) as target:
        rotated = _run_on(
            settings, target.uri, lambda db: rotate(db=db, account=account, instance=instance)
        )
        kept = _keep_demo_token(settings, rotated) if target.embedded and rotated.demo else None
    whose = f"instance {rotated.instance!r} of" if rotated.instance else "account"
    click.echo(f"new token for {whose} {rotated.account!r}; the old one no longer works")
    if kept is None:
        click.echo(f"token (store it now, it is not shown again): {rotated.token}")
    else:
        click.echo(f"token (also kept in {kept}): {rotated.token}")


def _keep_demo_token(settings: Settings, rotated: Rotated) -> Path | None:
    """Update the embedded database's kept demo tokens, so the next start prints this one."""
    path = tokens_file(settings.embedded_data_dir)
    known = read_tokens(path)
    if known is None:
        return None
    if rotated.instance is None:
        updated = DemoTokens(account=rotated.token, instances=known.instances)
    else:
        updated = DemoTokens(
            account=known.account, instances={**known.instances, rotated.instance: rotated.token}
        )
    write_tokens(path, updated)
    return path


@main.group()
def instances() -> None:
    """Create, list and configure instances."""


@instances.command("create")
@click.option("--account", required=True, help="Owning account: id, or its unique name.")
@click.option("--ignore-group-messages", is_flag=True, help="Leave group messages out of metrics.")
@click.argument("name")
@_with_settings
def instances_create(
    settings: Settings, account: str, ignore_group_messages: bool, name: str
) -> None:
    """Create an instance and print its token (shown only this once)."""
    created = _run(
        settings,
        lambda db: create_instance(
            db=db,
            account=account,
            name=name,
            ignore_group_messages=ignore_group_messages,
            now=_now(),
        ),
    )
    click.echo(f"instance {created.name!r} created, id {created.id}")
    click.echo(f"token (store it now, it is not shown again): {created.token}")


@instances.command("list")
@click.option("--account", help="Only this account's instances: id or unique name.")
@_with_settings
def instances_list(settings: Settings, account: str | None) -> None:
    """List instances: id, account id, name and settings."""
    rows = _run(settings, lambda db: list_instances(db=db, account=account))
    if not rows:
        click.echo("no instances")
    for row in rows:
        ignore = "ignoreGroupMessages" if row.ignore_group_messages else "-"
        click.echo(f"{row.id}  account {row.account_id}  {row.name}  {ignore}")


@instances.command("set")
@click.option("--account", required=True, help="Owning account: id or unique name.")
@click.option(
    "--ignore-group-messages/--no-ignore-group-messages",
    default=None,
    help="Leave group messages out of metrics, or count them again (one is required).",
)
@click.argument("name")
@_with_settings
def instances_set(
    settings: Settings, account: str, ignore_group_messages: bool | None, name: str
) -> None:
    """Change an instance's settings."""
    if ignore_group_messages is None:
        raise click.UsageError("say --ignore-group-messages or --no-ignore-group-messages")
    value = ignore_group_messages
    info = _run(
        settings,
        lambda db: set_ignore_group_messages(db=db, account=account, name=name, value=value),
    )
    click.echo(
        f"instance {info.name!r}: ignoreGroupMessages={str(info.ignore_group_messages).lower()}"
    )


@main.command()
@click.option(
    "--account",
    help="Seed this account's instances (id or unique name). "
    "Default: the demo account, created if missing.",
)
@click.option(
    "--instance", "names", multiple=True, help="Only these instances of --account (repeatable)."
)
@click.option(
    "--messages",
    type=click.IntRange(min=0),
    help=f"Top each instance up to this many messages (never duplicates). "
    f"Default: add {SEED_ADD} to each.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=90,
    show_default=True,
    help="Time span, ending now.",
)
@_with_settings
def seed(
    settings: Settings,
    account: str | None,
    names: tuple[str, ...],
    messages: int | None,
    days: int,
) -> None:
    """Fill instances with realistic demo messages: add a few to each, or top each up to
    --messages (idempotent)."""
    if names and account is None:
        raise click.UsageError("--instance needs --account.")
    each = SEED_ADD if messages is None else messages

    async def action(db: Database) -> tuple[int, list[str]]:
        rows = await list_instances(db=db, account=account or await _demo_account_id(db))
        chosen = [row for row in rows if not names or row.name in names]
        unknown = sorted(set(names) - {row.name for row in chosen})
        if unknown:
            raise click.ClickException(f"no such instance(s): {', '.join(unknown)}")
        added = 0
        with click.progressbar(length=each * len(chosen), label="seeding") as bar:
            for row in chosen:
                fill = add_messages if messages is None else seed_messages
                count = await fill(
                    db=db,
                    instance_id=row.id,
                    count=each,
                    days=days,
                    now=_now(),
                    progress=bar.update,
                )
                bar.update(each - count)
                added += count
        return added, [row.name for row in chosen]

    with _database(settings) as target:
        if account is None:
            _demo_tokens(settings, target, messages=0, renew=False)
        added, seeded = _run_on(settings, target.uri, action)
    if messages is None:
        click.echo(f"{added} messages added ({each} to each of {', '.join(seeded)})")
    else:
        click.echo(f"{added} messages added")


async def _demo_account_id(db: Database) -> str:
    demo = await db.accounts.find_one({"demo": True}, {"_id": 1})
    if demo is None:  # pragma: no cover - seed_demo just created it
        raise click.ClickException("the demo account is missing")
    return str(demo["_id"])


@main.group()
def rollups() -> None:
    """See and rebuild the rollups that metrics are read from."""


@rollups.command("status")
@_with_settings
def rollups_status(settings: Settings) -> None:
    """Whether the rollups are ready, building (how far) or without a consumer."""
    stored = _run(settings, lambda db: stored_source_status(db=db))
    status = stored.status
    source = f" (kept by the {stored.source})" if stored.source else ""
    click.echo(f"rollups: {status.phase}, {status.percent:.1f}% built{source}")
    if status.applied_at is not None:
        click.echo(f"applied up to {status.applied_at.as_datetime().isoformat()}")
    if stored.watermark is not None:
        click.echo(f"every write up to {stored.watermark.isoformat()} is counted")
    click.echo(f"behind the database by about {status.lag_seconds:.0f}s")
    if status.error:
        click.echo(f"note: {status.error}")


@rollups.command("rebuild")
@_with_settings
def rollups_rebuild(settings: Settings) -> None:
    """Drop the rollups and build them again from the messages, here, with a progress
    bar. Meanwhile requests stay exact: they scan the messages. Refused while a running
    service keeps the rollups current (stop it first; it rebuilds by itself whenever
    its stream cannot resume). Kept by the source ``ROLLUPS_SOURCE`` names: on a
    standalone server (``auto``), the ``updatedAt`` watermark."""
    _run(settings, functools.partial(_rebuild, source=settings.rollups_source))
    click.echo("rollups rebuilt: ready")


async def _rebuild(db: Database, *, source: SourceSetting) -> None:
    lease = await read_lease(db=db)
    if lease is not None and lease.expires_at > _now():
        raise click.ClickException(
            f"a running service ({lease.holder}) keeps the rollups current; stop it first"
        )
    await db[STATE_COLLECTION].delete_many({})  # no state: the consumer builds anew
    consumer = RollupSource(db=db, source=source)  # no reconcile: it has just built
    consumer.start()
    try:
        await _follow_build(consumer)
    finally:
        await consumer.stop()


async def _follow_build(consumer: RollupConsumer) -> None:
    with click.progressbar(length=1000, label="rebuilding") as bar:
        shown = 0
        while (status := consumer.status()).phase != "ready":
            if status.phase == "failed":
                raise click.ClickException(f"the rebuild failed: {status.error}")
            done = int(status.percent * 10)
            bar.update(max(0, done - shown))
            shown = max(shown, done)
            await asyncio.sleep(0.2)
        bar.update(1000 - shown)
