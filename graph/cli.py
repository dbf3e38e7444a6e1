"""The operator CLI: ``message-metrics --help``."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from strawberry.printer import print_schema

from graph.embedded import EmbeddedDatabase, EmbeddedDatabaseError, is_reachable
from graph.logs import configure_logging
from graph.settings import Settings
from resolvers import Database, MetricsError, ensure_indexes, open_client
from resolvers.admin import (
    create_account,
    create_instance,
    list_instances,
    set_ignore_group_messages,
)
from resolvers.rollups.consumer import RollupConsumer, stored_status
from resolvers.rollups.lease import read_lease
from resolvers.rollups.state import STATE_COLLECTION
from resolvers.seed import DemoTokens, seed_demo, seed_messages

__all__ = ["main"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Target:
    uri: str
    embedded: bool


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
        yield _Target(uri=embedded.uri, embedded=True)
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
@click.pass_context
def main(ctx: click.Context) -> None:
    """Message metrics: GraphQL and REST metrics for WhatsApp gateway instances.

    Configuration comes from the environment (MONGODB_URI, MONGODB_DATABASE, ...);
    without MONGODB_URI every command uses the embedded database.
    """
    ctx.obj = Settings()
    configure_logging("error")  # operators read the command's own output; serve logs fully


@main.command()
@click.option("--host", help="Interface to listen on (default: HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default: PORT or 8000).")
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the API; without MONGODB_URI, on the embedded database with demo data."""
    import uvicorn

    from graph.app import create_app

    settings = settings.model_copy(
        update={"host": host or settings.host, "port": port or settings.port}
    )
    with _database(settings) as target:
        if target.embedded:
            tokens = _run_on(
                settings,
                target.uri,
                lambda db: seed_demo(db=db, now=_now(), messages=settings.demo_messages),
            )
            _print_demo(tokens)
        served: dict[str, object] = {"mongodb_uri": target.uri}
        if target.embedded and settings.rollups_reconcile_minutes is None:
            served["rollups_reconcile_minutes"] = 0  # unset: no reconcile on the embedded one
        app = create_app(settings.model_copy(update=served))
        click.echo(f"GraphiQL: http://{settings.host}:{settings.port}/graphql")
        # uvicorn re-raises SIGTERM once it has shut down; make that unwind this block so
        # the embedded database is stopped too, instead of the process dying on the spot.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,  # the app logs each request as JSON
            **_forwarding(settings),
        )


def _forwarding(settings: Settings) -> dict[str, Any]:
    """Trust ``X-Forwarded-For``/``-Proto`` only from ``FORWARDED_ALLOW_IPS`` (the proxy's
    addresses); unset, trust none: uvicorn's default trusts loopback, where any local
    caller could pick a fresh client address, and so a fresh rate-limit bucket, per request."""
    if not settings.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": settings.forwarded_allow_ips}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _print_demo(tokens: DemoTokens) -> None:
    click.echo("Demo account (its tokens are renewed each time they are printed):")
    click.echo(f"  account token (all instances): {tokens.account}")
    for name, token in tokens.instances.items():
        click.echo(f"  instance token for {name!r}: {token}")


@main.command("embedded-db")
@click.pass_obj
def embedded_db(settings: Settings) -> None:
    """Run the embedded database in the foreground (Ctrl-C stops it).

    `serve` and the other commands use it when it already runs on EMBEDDED_PORT, so it
    can be stopped and restarted while the service keeps running.
    """
    embedded = EmbeddedDatabase(data_dir=settings.embedded_data_dir, port=settings.embedded_port)
    if is_reachable(embedded.uri):
        raise click.ClickException(f"a database already answers on port {embedded.port}")
    try:
        embedded.start()
    except EmbeddedDatabaseError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"embedded database on {embedded.uri} (data in {settings.embedded_data_dir})")
    try:
        embedded.wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        embedded.stop()


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
    """Create accounts."""


@accounts.command("create")
@click.argument("name")
@click.pass_obj
def accounts_create(settings: Settings, name: str) -> None:
    """Create an account and print its token (shown only this once)."""
    created = _run(settings, lambda db: create_account(db=db, name=name, now=_now()))
    click.echo(f"account {created.name!r} created, id {created.id}")
    click.echo(f"token (store it now, it is not shown again): {created.token}")


@main.group()
def instances() -> None:
    """Create, list and configure instances."""


@instances.command("create")
@click.option("--account", required=True, help="Owning account: id, or its unique name.")
@click.option("--ignore-group-messages", is_flag=True, help="Leave group messages out of metrics.")
@click.argument("name")
@click.pass_obj
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
@click.pass_obj
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
@click.pass_obj
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
    default=5_000,
    show_default=True,
    help="Messages per instance (tops up, never duplicates).",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=90,
    show_default=True,
    help="Time span, ending now.",
)
@click.pass_obj
def seed(
    settings: Settings, account: str | None, names: tuple[str, ...], messages: int, days: int
) -> None:
    """Fill instances with realistic demo messages (idempotent per instance)."""
    if names and account is None:
        raise click.UsageError("--instance needs --account.")

    async def action(db: Database) -> int:
        if account is None:
            tokens = await seed_demo(db=db, now=_now(), messages=0)
            _print_demo(tokens)
        rows = await list_instances(db=db, account=account or await _demo_account_id(db))
        chosen = [row for row in rows if not names or row.name in names]
        unknown = sorted(set(names) - {row.name for row in chosen})
        if unknown:
            raise click.ClickException(f"no such instance(s): {', '.join(unknown)}")
        added = 0
        with click.progressbar(length=messages * len(chosen), label="seeding") as bar:
            for row in chosen:
                count = await seed_messages(
                    db=db,
                    instance_id=row.id,
                    count=messages,
                    days=days,
                    now=_now(),
                    progress=bar.update,
                )
                bar.update(messages - count)
                added += count
        return added

    added = _run(settings, action)
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
@click.pass_obj
def rollups_status(settings: Settings) -> None:
    """Whether the rollups are ready, building (how far) or without a consumer."""
    status = _run(settings, lambda db: stored_status(db=db))
    click.echo(f"rollups: {status.phase}, {status.percent:.1f}% built")
    if status.applied_at is not None:
        click.echo(f"applied up to {status.applied_at.as_datetime().isoformat()}")
    click.echo(f"behind the database by about {status.lag_seconds:.0f}s")
    if status.error:
        click.echo(f"note: {status.error}")


@rollups.command("rebuild")
@click.pass_obj
def rollups_rebuild(settings: Settings) -> None:
    """Drop the rollups and build them again from the messages, here, with a progress
    bar. Meanwhile requests stay exact: they scan the messages. Refused while a running
    service applies the change stream (stop it first; it rebuilds by itself whenever
    its stream cannot resume)."""
    _run(settings, _rebuild)
    click.echo("rollups rebuilt: ready")


async def _rebuild(db: Database) -> None:
    lease = await read_lease(db=db)
    if lease is not None and lease.expires_at > _now():
        raise click.ClickException(
            f"a running service ({lease.holder}) applies the change stream; stop it first"
        )
    await db[STATE_COLLECTION].delete_many({})  # no state: the consumer builds anew
    consumer = RollupConsumer(db=db)
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
