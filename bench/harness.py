"""The run's I/O: seeded databases, the service as a process, and the measuring loops."""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from bson import ObjectId, Timestamp
from pymongo import AsyncMongoClient

from bench.report import Build, Load, Writes, size_label
from bench.stats import summarize
from graph.embedded import free_port, stop_process
from graph.rest import LEGACY_FIELDS
from resolvers import Database, InstanceRef, build_metrics_pipeline, ensure_indexes
from resolvers.admin import create_account, create_instance, rotate_token
from resolvers.pipeline import read_metrics
from resolvers.seed import generate_messages

__all__ = [
    "Prepared",
    "Service",
    "Writing",
    "extra_queries",
    "full_scan",
    "load",
    "prepare",
    "rounds",
    "service",
]

Call = Callable[[], Awaitable[None]]
"""One timed request; it raises when the answer is wrong (its timing would mean nothing)."""
Log = Callable[[str], None]

HOST, WRITES, LAG_POLL_S, DRAIN_S = "127.0.0.1", "bench-writes", 0.02, 15.0
IN_FLIGHT = 64
"""Writes under way at once at most (as many gateway connections would send them)."""
SERVICE_ENV = {
    "RATE_LIMIT_PER_MINUTE": "100000000",
    "MAX_IN_FLIGHT": "256",
    "MAX_IN_FLIGHT_PER_TOKEN": "256",
    "REQUEST_TIMEOUT_MS": "3600000",
    "ROLLUPS_RECONCILE_MINUTES": "0",  # as on the embedded database by default
    "ROLLUPS_WARM_DAYS": "0",  # reading ahead would run beside the measurements
    # a request waits for its writes up to 5 s: past the wait it scans, and the scan's
    # $in reads the whole collection on SecantusDB (minutes at 1M: at 200 writes/s the
    # consumer's lag passed 1 s now and then, and each scan then stalled the run)
    "ROLLUPS_WAIT_MS": "5000",
    "LOG_LEVEL": "warning",
}
METRICS = f"query M($instances: [String!]) {{ metrics(instances: $instances) {{{LEGACY_FIELDS}}} }}"


_SERIES = (
    "query S($i: [String!], $r: TimeRange!, $v: Interval!, $z: String!) {"
    " series(instances: $i, range: $r, interval: $v, timezone: $z)"
    " { points { start totalMessages messagesSent messagesReceived"
    " messagesByType { key count } messagesByStatus { key count } } } }"
)
_RANGE = (
    "query R($i: [String!], $r: TimeRange!) {"
    f" metrics(instances: $i, range: $r) {{{LEGACY_FIELDS}}} }}"
)
_RANGE_COUNTERS = (
    "query C($i: [String!], $r: TimeRange!) { metrics(instances: $i, range: $r) {"
    " totalMessages messagesSent messagesReceived groupMessages individualMessages"
    " messagesWithMedia messagesByType { key count } messagesByStatus { key count }"
    " mediaByType { key count } messagesLast7Days messagesLast30Days"
    " firstMessageAt lastMessageAt } }"
)


def extra_queries(*, instance: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Issue 10's figures: (label, GraphQL query, variables) measured on the largest
    instance in the same rounds as ``metrics``, each held to p50 ≤ 10x health p50: series
    DAY over 90 days and HOUR over 7 days in UTC and Asia/Kolkata, metrics over a 30-day
    range (every field, and without the unique counts, which a range reads raw)."""
    now = datetime.now(UTC)

    def days(n: int) -> dict[str, str]:
        return {"from": (now - timedelta(days=n)).isoformat(), "to": now.isoformat()}

    queries = [
        (f"series {interval} {span}d {zone}", _SERIES, {"r": days(span), "v": interval, "z": zone})
        for interval, span in (("DAY", 90), ("HOUR", 7))
        for zone in ("UTC", "Asia/Kolkata")
    ]
    queries.append(("metrics 30d range", _RANGE, {"r": days(30)}))
    queries.append(("metrics 30d range, no unique counts", _RANGE_COUNTERS, {"r": days(30)}))
    return [(label, text, {"i": [instance], **variables}) for label, text, variables in queries]


# --- data ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    db: Database
    ref: InstanceRef
    writes: InstanceRef
    """An instance of its own for the writes, emptied before every run."""
    token: str
    seeding: str


async def prepare(*, client: AsyncMongoClient[Any], size: int, seed: int, log: Log) -> Prepared:
    """The database of one size, reused when it holds the same seeded data (else seeded),
    without rollups (the service builds them) and without an earlier run's writes."""
    db = client[f"bench_{size_label(size).lower()}"]
    marker = await db.bench_seed.find_one({"_id": "seed"})
    if marker is not None and (marker["messages"], marker["seed"]) == (size, seed):
        seeding = f"reused (seeded {marker['at']:%Y-%m-%d} in {marker['seconds']:,.0f} s)"
    else:
        await client.drop_database(db.name)
        marker = await _seed(db, size=size, seed=seed, log=log)
        seeding = f"seeded in {marker['seconds']:,.1f} s"
    for name in await db.list_collection_names():
        if name.startswith("rollup_"):
            await db.drop_collection(name)
    await db.messages.delete_many({"instanceId": marker["writes"]})
    token = await rotate_token(db=db, collection="accounts", id=marker["account"])
    ref = InstanceRef(
        id=marker["instance"], name=f"bench-{size_label(size)}", ignore_group_messages=False
    )
    writes = InstanceRef(id=marker["writes"], name=WRITES, ignore_group_messages=False)
    return Prepared(db=db, ref=ref, writes=writes, token=token, seeding=seeding)


async def _seed(db: Database, *, size: int, seed: int, log: Log) -> dict[str, Any]:
    """One account, an instance of ``size`` generated messages over 180 days (inserted
    5,000 at a time, indexes in place) and the writes instance; the marker comes last."""
    now, started = datetime.now(UTC), time.monotonic()
    await ensure_indexes(db)
    account = await create_account(db=db, name="Benchmark", now=now)
    ids = []
    for name in (f"bench-{size_label(size)}", WRITES):
        made = await create_instance(
            db=db, account=str(account.id), name=name, ignore_group_messages=False, now=now
        )
        ids.append(made.id)
    docs = generate_messages(instance_id=ids[0], count=size, days=180, now=now, seed=seed)
    done = 0
    while batch := [doc for _, doc in zip(range(5_000), docs, strict=False)]:
        await db.messages.insert_many(batch, ordered=False)
        done += len(batch)
        if done % 100_000 == 0:
            log(f"  seeded {done:,}/{size:,} ({time.monotonic() - started:,.0f} s)")
    marker = {"_id": "seed", "messages": size, "seed": seed, "account": account.id, "at": now}
    marker |= {"instance": ids[0], "writes": ids[1], "seconds": time.monotonic() - started}
    await db.bench_seed.insert_one(marker)
    return marker


# --- the service ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    http: httpx.AsyncClient
    pid: int
    started: float

    async def rollups(self) -> Mapping[str, Any]:
        """``checks.rollups`` of /health; ``{"state": "absent"}`` when it has none."""
        found = (await self.http.get("/health")).json().get("checks", {}).get("rollups")
        return found if isinstance(found, Mapping) else {"state": "absent"}

    async def wait_built(self, *, db_pid: int, timeout: float, log: Log) -> Build:
        """Poll /health until the rollups are ready (or absent, off, failed, or the
        timeout passes), sampling the database's memory meanwhile."""
        peak = rss_mb(db_pid) or 0.0
        told = time.monotonic()
        while True:
            state = await self.rollups()
            peak, now = max(peak, rss_mb(db_pid) or 0.0), time.monotonic()
            if state["state"] in ("ready", "absent", "off", "failed"):
                break
            if now - self.started > timeout:
                break
            if now - told >= 15:
                told = now
                log(f"  rollups {state['state']} {state.get('percent', 0):.0f}%")
            await asyncio.sleep(0.25)
        seconds = now - self.started if state["state"] == "ready" else None
        shown = str(state["state"])
        if shown == "building":  # the timeout passed
            shown += f" {state.get('percent', 0):.0f}%"
        return Build(shown, seconds, rss_mb(self.pid, "VmHWM"), peak)

    def request(self, path: str, *, token: str = "", graphql: Any = None, total: int = -1) -> Call:
        """GET ``path``, or POST the ``graphql`` payload to it; ``total`` (unless -1): the
        answer's ``totalMessages``."""
        headers = {"token": token}

        async def call() -> None:
            if graphql is None:
                body = _body(await self.http.get(path, headers=headers), path)
            else:
                body = _body(await self.http.post(path, json=graphql, headers=headers), path)
            if total >= 0:
                _expect(
                    path, (body["data"] if graphql else body)["metrics"]["totalMessages"], total
                )

        return call


@asynccontextmanager
async def service(*, uri: str, database: str) -> AsyncIterator[Service]:
    """``message-metrics serve`` on a free loopback port, stopped however the block ends."""
    port, beside = free_port(), Path(sys.executable).with_name("message-metrics")
    command = [str(beside), "serve", "--host", HOST, "--port", str(port)]
    env = {**os.environ, **SERVICE_ENV, "MONGODB_URI": uri, "MONGODB_DATABASE": database}
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        started = time.monotonic()
        try:
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=3600) as http:
                while process.poll() is None and time.monotonic() - started < 60:
                    try:
                        await http.get("/health", timeout=5)
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
                else:
                    out.seek(0)
                    raise RuntimeError(f"the service did not start:\n{out.read()[-3000:]!r}")
                yield Service(http=http, pid=process.pid, started=started)
        except Exception:  # what the service logged explains a failed measurement
            out.seek(0)
            tail = out.read()[-4000:].decode(errors="replace")
            print(f"the service's log ends with:\n{tail}", file=sys.stderr, flush=True)
            raise
        finally:
            stop_process(process)


def rss_mb(pid: int, field: str = "VmRSS") -> float | None:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    kb = next((line.split()[1] for line in lines if line.startswith(field)), None)
    return None if kb is None else int(kb) / 1024


# --- measuring ----------------------------------------------------------------------


def _body(response: httpx.Response, what: str) -> Any:
    body = response.json() if response.status_code == 200 else None
    if body is None or body.get("errors"):
        raise RuntimeError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return body


def _expect(what: str, total: object, expected: int) -> None:
    if total != expected:
        raise RuntimeError(f"{what}: totalMessages {total!r}, expected {expected:,}")


def full_scan(db: Database, ref: InstanceRef, *, expected: int) -> Call:
    """Today's pipeline through the driver, from the harness: no HTTP, no rollups."""

    async def call() -> None:
        pipeline = build_metrics_pipeline(instances=[ref], now=datetime.now(UTC))
        rows = await (await db.messages.aggregate(pipeline)).to_list()
        _expect("full scan", read_metrics(rows[0] if rows else {}).total_messages, expected)

    return call


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def rounds(
    calls: Mapping[str, Call], *, runs: int, min_runs: int, budget: float
) -> dict[str, list[float]]:
    """A warm-up round (discarded), then rounds of one request per path, the order rotating
    so drift hits every path alike: ``runs`` rounds, fewer (at least ``min_runs``) once
    ``budget`` seconds have passed."""
    for call in calls.values():
        await call()
    samples: dict[str, list[float]] = {label: [] for label in calls}
    order, started = list(calls), time.monotonic()
    for done in range(runs):
        if done >= min_runs and time.monotonic() - started > budget:
            break
        for label in order[done % len(order) :] + order[: done % len(order)]:
            samples[label].append(await _timed(calls[label]))
    return samples


async def load(call: Call, *, messages: int, clients: int, seconds: float) -> Load:
    """``clients`` loops sending ``call`` back to back for ``seconds``; requests in flight
    then finish and count."""
    latencies: list[float] = []
    started = time.monotonic()

    async def client() -> int:
        errors = 0
        while time.monotonic() - started < seconds:
            try:
                latencies.append(await _timed(call))
            except Exception:  # counted: the load goes on
                errors += 1
        return errors

    errors = sum(await asyncio.gather(*(client() for _ in range(clients))))
    summary = summarize(latencies) if latencies else None
    return Load(messages, clients, len(latencies), errors, time.monotonic() - started, summary)


# --- writes while reading ---------------------------------------------------------------


@dataclass(slots=True)
class Writing:
    """Writes into ``prep.writes`` at given rates, with a watcher of the consumer's applied
    position (``rollup_state.appliedAt``) and a reader checking exactness."""

    prep: Prepared
    svc: Service
    writer: Database
    """What the writes go through: a client with or without retryable writes."""
    pending: list[tuple[Timestamp, float]] = field(default_factory=list)
    """Writes not yet visible: (operationTime, acknowledged at), a heap."""
    ids: list[ObjectId] = field(default_factory=list)
    acked: int = 0
    sent: int = 0
    writing: bool = False

    async def rates(self, rates: tuple[int, ...], *, seconds: float, log: Log) -> list[Writes]:
        """Each rate in turn, stopping after one the consumer does not keep up with."""
        out: list[Writes] = []
        for rate in rates:
            out.append(await self.hold(rate, seconds, log=log))
            if not out[-1].kept_up:
                break
        return out

    async def hold(self, rate: int, seconds: float, *, log: Log) -> Writes:
        w = await self._hold(rate, seconds)
        p99 = "-" if w.lag is None else f"{w.lag.p99 * 1000:,.0f} ms"
        how = "retryable" if w.retryable else "plain"
        log(f"  {rate}/s {how}: achieved {w.achieved:.0f}/s, lag p99 {p99}, late {w.unapplied}")
        return w

    async def _hold(self, rate: int, seconds: float) -> Writes:
        db = self.prep.db
        watched = await db.rollup_state.find_one({"_id": "consumer"}) is not None
        lags: list[float] = []
        reads: list[float] = []
        self.writing, self.pending = True, []
        tasks = [self._reader(reads)] + ([self._watcher(lags)] if watched else [])
        background = asyncio.gather(*tasks)
        count, elapsed = await self._writer(rate, seconds)
        self.writing = False
        wrong = (await background)[0]
        lag = summarize(lags) if lags else None
        unapplied = len(self.pending) if watched else 0
        read = summarize(reads) if reads else None
        retryable = self.writer.client.options.retry_writes
        return Writes(rate, count, elapsed, lag, unapplied, read, wrong, retryable)

    async def _writer(self, rate: int, seconds: float) -> tuple[int, float]:
        """Writes paced at ``rate`` for ``seconds``, each sent at its time whether or not
        the ones before it were answered (``IN_FLIGHT`` at most), alternately an insert
        dated now and a status update of an earlier insert moving ``updatedAt``."""
        rng, total = random.Random(rate), int(rate * seconds)
        docs = generate_messages(
            instance_id=self.prep.writes.id, count=total, days=1, now=datetime.now(UTC), seed=rate
        )
        room, tasks = asyncio.Semaphore(IN_FLIGHT), []
        started = time.monotonic()
        for k, doc in enumerate(docs):
            await asyncio.sleep(max(0.0, started + k / rate - time.monotonic()))
            if time.monotonic() - started >= seconds:  # behind the pace: stop on time
                break
            await room.acquire()
            tasks.append(asyncio.create_task(self._write(doc, update=k % 2 == 1, rng=rng)))
            tasks[-1].add_done_callback(lambda _: room.release())
        await asyncio.gather(*tasks)
        return len(tasks), time.monotonic() - started

    async def _write(self, doc: dict[str, Any], *, update: bool, rng: random.Random) -> None:
        """One write on a session of its own (for its ``operationTime``)."""
        db = self.writer
        async with db.client.start_session(causal_consistency=False) as session:
            now = datetime.now(UTC)
            if update and self.ids:
                change = {"status": rng.choice(("delivered", "read", "played")), "updatedAt": now}
                target = {"_id": rng.choice(self.ids)}
                await db.messages.update_one(target, {"$set": change}, session=session)
            else:
                self.sent += 1
                doc |= {"timestamp": now, "updatedAt": now}
                self.ids.append((await db.messages.insert_one(doc, session=session)).inserted_id)
                self.acked += 1
            assert session.operation_time is not None
            heapq.heappush(self.pending, (session.operation_time, time.monotonic()))

    async def _watcher(self, lags: list[float]) -> int:
        """A write is visible once ``appliedAt`` reaches its ``operationTime``; after the
        writes, wait up to ``DRAIN_S`` for the rest."""
        drain_until = None
        while True:
            doc = await self.prep.db.rollup_state.find_one({"_id": "consumer"}) or {}
            now, applied = time.monotonic(), doc.get("appliedAt")
            while applied is not None and self.pending and self.pending[0][0] <= applied:
                lags.append(now - heapq.heappop(self.pending)[1])
            if not self.writing:
                drain_until = drain_until or now + DRAIN_S
                if not self.pending or now >= drain_until:
                    return 0
            await asyncio.sleep(LAG_POLL_S)

    async def _reader(self, reads: list[float]) -> int:
        """About one metrics request a second; each must count every insert acknowledged
        before it was sent and none not yet sent when it answered. Returns the wrong ones."""
        wrong, name, token = 0, self.prep.writes.name, self.prep.token
        while self.writing:
            low, started = self.acked, time.perf_counter()
            response = await self.svc.http.get(f"/metrics/{name}", headers={"token": token})
            reads.append(time.perf_counter() - started)
            total = _body(response, "REST")["metrics"]["totalMessages"]
            wrong += not low <= total <= self.sent
            await asyncio.sleep(1.0)
        return wrong
