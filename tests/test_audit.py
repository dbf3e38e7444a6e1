"""GraphQL over HTTP conformance: the independent audit suite of the npm package
``graphql-http`` (``serverAudits``, pinned in tests/audit/package-lock.json) against a
running ``message-metrics serve``; every audit must be ``ok``.

``make test`` installs the audit (``npm ci --prefix tests/audit``). Without Node the test
is skipped on a developer's machine and fails in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from resolvers import Database
from tests.factories import make_tenant
from tests.server import serve

AUDIT = Path(__file__).parent / "audit"


def _node() -> str:
    node = shutil.which("node")
    installed = (AUDIT / "node_modules" / "graphql-http").is_dir()
    if node and installed:
        return node
    reason = "node is missing" if not node else "run `make test` (npm ci --prefix tests/audit)"
    if os.environ.get("CI"):
        pytest.fail(f"the GraphQL over HTTP audit cannot run in CI: {reason}")
    pytest.skip(f"the GraphQL over HTTP audit needs Node: {reason}")


async def test_graphql_http_server_audits_are_all_ok(
    mongodb_uri: str, database_name: str, db: Database, tmp_path: Path
) -> None:
    node = _node()
    tenant = await make_tenant(db)
    log = tmp_path / "serve.log"
    with serve(mongodb_uri=mongodb_uri, database=database_name, log=log) as base:
        audit = subprocess.run(
            [node, str(AUDIT / "audit.mjs"), f"{base}/graphql", tenant.account_token],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    report = f"{audit.stdout}{audit.stderr}\n--- serve log ---\n{log.read_text()}"
    assert audit.returncode == 0, report
    assert " 0 not ok" in audit.stdout, report
