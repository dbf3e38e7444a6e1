"""Two ``message-metrics serve`` processes on one database: exactly one applies the
change stream, both answer exactly, and killing it lets the other take over."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph.embedded import free_port, stop_process
from graph.rest import LEGACY_FIELDS
from graph.types import format_datetime
from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.pipeline import MetricsResult
from tests.factories import Tenant, make_tenant, message
from tests.server import wait_for_health

QUERY = {"query": f'{{ metrics(instances: ["sales", "support"]) {{ {LEGACY_FIELDS} }} }}'}
LEASE_SECONDS = 10  # the consumer's lease: a killed holder is replaced after it expires


@dataclasses.dataclass
class Served:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serve(*, mongodb_uri: str, database: str, log: Path) -> Iterator[Served]:
    """``message-metrics serve`` on a free loopback port, with its process (to kill it)."""
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DATABASE": database,
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "ROLLUPS_RECONCILE_MINUTES": "0",
    }
    command = [str(Path(sys.executable).with_name("message-metrics")), "serve"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(f"{url}/health", process, log)
        yield Served(url, process, log)
    finally:
        stop_process(process, grace=5)


def _rollups(served: Served) -> dict[str, Any]:
    body = httpx.get(f"{served.url}/health", timeout=10).json()
    found: dict[str, Any] = body["checks"]["rollups"]
    return found


def _wait_for_one_leader(alive: list[Served], *, timeout: float) -> Served:
    """Until every process says ready and exactly one of them leads; that one."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        states = [_rollups(served) for served in alive]
        leaders = [served for served, state in zip(alive, states, strict=True) if state["leader"]]
        if len(leaders) == 1 and all(state["state"] == "ready" for state in states):
            return leaders[0]
        time.sleep(0.1)
    logs = "\n".join(served.log.read_text()[-2000:] for served in alive)
    raise AssertionError(f"no single ready leader: {states}\n{logs}")


def _as_graphql(result: MetricsResult) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        first, *rest = field.name.split("_")
        if isinstance(value, dict):
            value = [{"key": key, "count": count} for key, count in value.items()]
        elif isinstance(value, datetime):
            value = format_datetime(value)
        answer[first + "".join(word.capitalize() for word in rest)] = value
    return answer


async def _assert_exact(db: Database, tenant: Tenant, alive: list[Served]) -> None:
    """Each process answers what the full scan answers (at the same moment, to the
    second: the windows' edges are far from every message)."""
    refs = [
        InstanceRef(id=tenant.instance_ids["sales"], name="sales", ignore_group_messages=False),
        InstanceRef(id=tenant.instance_ids["support"], name="support", ignore_group_messages=True),
    ]
    headers = {"token": tenant.account_token}
    for served in alive:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as http:
            body = (await http.post("/graphql", json=QUERY, headers=headers)).json()
        expected = _as_graphql(await fetch_metrics(db=db, instances=refs, now=datetime.now(UTC)))
        assert body.get("errors") is None, body
        answer = body["data"]["metrics"]
        assert {key: answer[key] for key in expected} == expected, served.url
        assert len(expected) == 16  # every metric


async def _write(db: Database, tenant: Tenant, step: int) -> None:
    """Inserts, a status update and a delete, dated well inside the windows."""
    sales, support = tenant.instance_ids["sales"], tenant.instance_ids["support"]
    now = datetime.now(UTC)
    docs = [
        message(sales, timestamp=now - timedelta(days=0.5), chatId=f"c{step}@s.whatsapp.net"),
        message(support, timestamp=now - timedelta(days=3), isGroup=True, chatId=f"{step}@g.us"),
        message(sales, timestamp=now - timedelta(days=12), type="image", media={"type": "image"}),
    ]
    ids = (await db.messages.insert_many(docs)).inserted_ids
    await db.messages.update_one({"_id": ids[0]}, {"$set": {"status": "played"}})
    await db.messages.delete_one({"_id": ids[2]})


@pytest.mark.skipif(bool(os.environ.get("MONGODB_URI")), reason="kills a process on its server")
async def test_two_processes_one_leader_both_exact_and_a_killed_leader_is_replaced(
    db: Database, mongodb_uri: str, database_name: str, tmp_path: Path
) -> None:
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    for step in range(20):  # a history for the leader to build
        await _write(db, tenant, step)
    with ExitStack() as stack:
        alive = [
            stack.enter_context(
                serve(mongodb_uri=mongodb_uri, database=database_name, log=tmp_path / f"{n}.log")
            )
            for n in (1, 2)
        ]
        leader = _wait_for_one_leader(alive, timeout=60)
        lease = await db.rollup_lease.find_one({"_id": "consumer"})
        assert lease is not None and lease["expiresAt"] > datetime.now(UTC)
        await _write(db, tenant, 100)
        await _assert_exact(db, tenant, alive)

        leader.process.send_signal(signal.SIGKILL)  # dies holding the lease
        leader.process.wait(timeout=10)
        survivor = next(served for served in alive if served is not leader)
        await _write(db, tenant, 200)
        assert _wait_for_one_leader([survivor], timeout=LEASE_SECONDS + 20) is survivor
        taken = await db.rollup_lease.find_one({"_id": "consumer"})
        assert taken is not None and taken["holder"] != lease["holder"]
        await _write(db, tenant, 300)
        await asyncio.sleep(0)  # nothing to wait for: a request waits for its own writes
        await _assert_exact(db, tenant, [survivor])
