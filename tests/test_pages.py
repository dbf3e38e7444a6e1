"""Our pages without a browser: what is served, with which policy, and from which origin.

The browser tests (tests/test_browser_*.py) prove the same pages work in Chromium with
every other origin unreachable; these prove, on every run and without a browser, that
no page of ours names another origin and that each carries the policy that forbids one.
"""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from graph.pages import STATIC

ROOT = Path(__file__).resolve().parents[1]
VENDOR = STATIC / "vendor"
PAGES = ("/", "/dashboard")
HTML = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}

#: URLs that are names, not addresses: an SVG's XML namespace is never fetched.
_NAMESPACES = {"http://www.w3.org/2000/svg"}
_URL = re.compile(r"""(?:https?:)?//[^\s"'`)<>]+""")


class _References(HTMLParser):
    """Every ``src`` and ``href`` of a page, and its meta tags."""

    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.meta: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.references.append(values[name] or "")
        if tag == "meta" and values.get("name"):
            self.meta[values["name"] or ""] = values.get("content") or ""


def _parse(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def _policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: values for name, *values in directives}


def _assert_this_origin_only(policy: dict[str, list[str]]) -> None:
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no other host
    assert policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    for name, values in policy.items():
        for value in values:
            allowed = value in ("'self'", "'none'", "data:") or value.startswith("'nonce-")
            assert allowed, f"{name} allows {value}"


@pytest.mark.parametrize("path", PAGES)
async def test_the_dashboard_is_served_with_a_policy_of_this_origin_only(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path, headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = _policy(response.headers["content-security-policy"])
    _assert_this_origin_only(policy)
    assert policy["style-src"] == ["'self'"]  # Chart.js needs no inline style element
    assert policy["img-src"] == policy["font-src"] == ["'self'"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "Message Metrics" in response.text
    assert "/static/vendor/chart.js/chart.umd.min.js" in _parse(response.text).references


async def test_graphiql_is_ours_with_a_fresh_style_nonce_per_page(http: httpx.AsyncClient) -> None:
    first = await http.get("/graphql", headers=HTML)
    second = await http.get("/graphql", headers=HTML)
    assert first.status_code == 200
    page = _parse(first.text)
    assert "/static/vendor/graphiql/graphiql.min.js" in page.references
    assert "/static/graphiql.js" in page.references
    policy = _policy(first.headers["content-security-policy"])
    _assert_this_origin_only(policy)
    nonce = page.meta["csp-nonce"]
    assert len(nonce) >= 16
    assert policy["style-src"] == ["'self'", f"'nonce-{nonce}'"]
    assert policy["img-src"] == policy["font-src"] == ["'self'", "data:"]
    assert _parse(second.text).meta["csp-nonce"] != nonce
    assert first.headers["cache-control"] == "no-store"


async def test_graphql_requests_still_answer_graphql_at_the_same_path(
    http: httpx.AsyncClient,
) -> None:
    """The page replaces Strawberry's IDE only: GET with a query, and POST, run GraphQL."""
    by_get = await http.get("/graphql", params={"query": "{ __typename }"})
    by_post = await http.post("/graphql", json={"query": "{ __typename }"})
    for response in (by_get, by_post):
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["data"] == {"__typename": "Query"}


@pytest.mark.parametrize("path", [*PAGES, "/graphql"])
async def test_every_file_a_page_loads_is_served_from_this_origin(
    http: httpx.AsyncClient, path: str
) -> None:
    page = await http.get(path, headers=HTML)
    references = [ref for ref in _parse(page.text).references if not ref.startswith("#")]
    assert references
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        response = await http.get(reference)
        assert response.status_code == 200, reference
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_the_dashboards_modules_are_served_as_javascript(http: httpx.AsyncClient) -> None:
    modules = sorted((STATIC / "dashboard").glob("*.js"))
    assert modules
    for module in modules:
        response = await http.get(f"/static/dashboard/{module.name}")
        assert response.status_code == 200
        assert "javascript" in response.headers["content-type"]


def test_no_file_of_ours_names_another_origin() -> None:
    """Our HTML, CSS and JavaScript (all but the vendored builds) hold no URL elsewhere."""
    ours = [path for path in STATIC.rglob("*") if path.is_file() and VENDOR not in path.parents]
    assert {path.suffix for path in ours} >= {".html", ".css", ".js"}
    for path in ours:
        urls = set(_URL.findall(path.read_text(encoding="utf-8"))) - _NAMESPACES
        assert not urls, f"{path.relative_to(STATIC)} names {urls}"


def test_vendored_stylesheets_load_nothing_from_elsewhere() -> None:
    """A stylesheet's ``url()`` and ``@import`` are loads: only embedded ``data:`` ones."""
    for stylesheet in VENDOR.rglob("*.css"):
        text = stylesheet.read_text(encoding="utf-8")
        assert "@import" not in text, stylesheet
        for target in re.findall(r"url\(\s*['\"]?([^'\")]*)", text):
            assert target.startswith("data:"), f"{stylesheet.name} loads {target[:60]}"


def test_vendored_files_are_the_locked_packages_builds_with_their_licenses() -> None:
    """VERSIONS.json (written by `make assets`) matches the lockfile, and each vendored
    file is byte for byte what it recorded: an edited or half-upgraded copy fails."""
    versions = json.loads((VENDOR / "VERSIONS.json").read_text())
    lock = json.loads((ROOT / "scripts" / "assets" / "package-lock.json").read_text())
    wanted = json.loads((ROOT / "scripts" / "assets" / "package.json").read_text())
    assert set(versions) <= set(wanted["dependencies"])
    for package, entry in versions.items():
        assert entry["version"] == wanted["dependencies"][package]
        assert lock["packages"][f"node_modules/{package}"]["version"] == entry["version"]
        folder = VENDOR / entry["folder"]
        for name, digest in entry["files"].items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        assert entry["licenses"]
        for license_name in entry["licenses"]:
            assert "Permission is hereby granted" in (folder / license_name).read_text()
    on_disk = {
        str(path.relative_to(VENDOR))
        for path in VENDOR.rglob("*")
        if path.is_file() and path.name != "VERSIONS.json"
    }
    recorded = {
        f"{entry['folder']}/{name}"
        for entry in versions.values()
        for name in [*entry["files"], *entry["licenses"]]
    }
    assert on_disk == recorded


async def test_static_paths_outside_the_folder_or_missing_are_404_envelopes(
    http: httpx.AsyncClient,
) -> None:
    for path in ("/static/nothing.js", "/static/../pages.py", "/static/%2e%2e/pages.py"):
        response = await http.get(path)
        assert response.status_code == 404, path
        assert response.json()["success"] is False
