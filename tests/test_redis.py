"""The shared rate-limit storage on a real Redis (``redis-server`` on a free loopback port):
two app instances share one bucket per token, and a Redis that is down or stuck fails
closed with 503, never a 500."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, closing
from dataclasses import dataclass

import httpx
import pytest

from graph import Settings
from graph.embedded import free_port, stop_process
from resolvers import Database
from tests.factories import Tenant, app_client, make_tenant

LIGHT_QUERY = {"query": "{ __typename }"}


@dataclass
class Redis:
    process: subprocess.Popen[bytes]
    uri: str


@pytest.fixture
def redis() -> Iterator[Redis]:
    """A throw-away ``redis-server`` (no persistence) on a free 127.0.0.1 port."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (.ci/run installs Debian's package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_pong(port, process)
        yield Redis(process=process, uri=f"redis://127.0.0.1:{port}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # in case a test froze it
        stop_process(process, grace=5)


def _wait_for_pong(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, "redis-server exited"
        try:
            with closing(socket.create_connection(("127.0.0.1", port), timeout=1)) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("redis-server did not answer PING")


@asynccontextmanager
async def _two_apps(
    settings: Settings, redis: Redis, per_minute: int
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    shared = settings.model_copy(
        update={"rate_limit_storage_uri": redis.uri, "rate_limit_per_minute": per_minute}
    )
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(app_client(shared))
        second = await stack.enter_async_context(app_client(shared))
        yield first, second


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    return await make_tenant(db, instances={"sales": False})


async def test_two_apps_on_one_redis_share_one_bucket_per_token(
    settings: Settings, db: Database, tenant: Tenant, redis: Redis
) -> None:
    token = {"token": tenant.account_token}
    async with _two_apps(settings, redis, per_minute=3) as (first, second):
        before = int(time.time())
        answers = [
            await first.get("/metrics/sales", headers=token),
            await second.post("/graphql", json=LIGHT_QUERY, headers=token),
            await first.get("/metrics/sales", headers=token),
        ]
        assert [response.status_code for response in answers] == [200, 200, 200]
        assert [response.headers["X-RateLimit-Remaining"] for response in answers] == [
            "2",
            "1",
            "0",
        ]
        assert all(response.headers["X-RateLimit-Limit"] == "3" for response in answers)
        after = int(time.time())  # the requests may take seconds on a loaded machine
        assert before + 59 <= int(answers[0].headers["X-RateLimit-Reset"]) <= after + 61
        rest = await second.get("/metrics/sales", headers=token)
        assert rest.status_code == 429 and 1 <= int(rest.headers["Retry-After"]) <= 60
        assert rest.json() == {
            "success": False,
            "error": {"message": rest.json()["error"]["message"]},
        }
        assert "3 points per minute" in rest.json()["error"]["message"]
        graphql = await first.post("/graphql", json=LIGHT_QUERY, headers=token)
        assert graphql.status_code == 429
        assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        other = await second.get(
            "/metrics/sales", headers={"token": tenant.instance_tokens["sales"]}
        )
        assert other.status_code == 200 and other.headers["X-RateLimit-Remaining"] == "2"


async def test_an_operations_cost_is_charged_to_the_shared_bucket(
    settings: Settings, db: Database, tenant: Tenant, redis: Redis
) -> None:
    token = {"token": tenant.account_token}
    aliases = " ".join(f"m{n}: metrics {{ totalMessages }}" for n in range(4))
    async with _two_apps(settings, redis, per_minute=5) as (first, second):
        costly = await first.post("/graphql", json={"query": f"{{ {aliases} }}"}, headers=token)
        assert costly.json()["extensions"]["cost"] == {"requested": 4, "remaining": 1, "limit": 5}
        last = await second.get("/metrics/sales", headers=token)
        assert last.status_code == 200 and last.headers["X-RateLimit-Remaining"] == "0"
        assert (await first.get("/metrics/sales", headers=token)).status_code == 429


async def test_a_redis_that_is_down_fails_closed_with_503(
    settings: Settings, db: Database, tenant: Tenant, redis: Redis
) -> None:
    token = {"token": tenant.account_token}
    async with _two_apps(settings, redis, per_minute=3) as (first, _):
        assert (await first.get("/metrics/sales", headers=token)).status_code == 200
        stop_process(redis.process, grace=5)
        rest = await first.get("/metrics/sales", headers=token)
        graphql = await first.post("/graphql", json=LIGHT_QUERY, headers=token)
        health = await first.get("/health")
    assert rest.status_code == 503
    assert "rate-limit storage cannot be reached" in rest.json()["error"]["message"]
    assert graphql.status_code == 503
    error = graphql.json()["errors"][0]
    assert error["extensions"]["code"] == "UNAVAILABLE"
    assert "rate-limit storage cannot be reached" in error["message"]
    assert health.status_code == 200  # the service itself is up


async def test_a_redis_that_stops_answering_fails_closed_within_seconds(
    settings: Settings, db: Database, tenant: Tenant, redis: Redis
) -> None:
    token = {"token": tenant.account_token}
    async with _two_apps(settings, redis, per_minute=3) as (first, _):
        assert (await first.get("/metrics/sales", headers=token)).status_code == 200
        redis.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        async with asyncio.timeout(20):  # rather than hang the suite if it does hang
            rest = await first.get("/metrics/sales", headers=token)
        elapsed = time.monotonic() - started
    assert rest.status_code == 503
    assert "rate-limit storage" in rest.json()["error"]["message"]
    assert elapsed < 10
