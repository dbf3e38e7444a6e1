"""Our browser pages: the dashboard (``/``, ``/dashboard``), GraphiQL (``GET /graphql`` from
a browser) and their static files (``/static/...``), all from files in the package.

No page loads anything from another origin: the GraphiQL build, React and Chart.js are
vendored into graph/static/vendor/ by ``make assets`` (scripts/vendor_assets.py), and each
page is sent with a ``Content-Security-Policy`` that allows this origin alone: no inline
script, no ``eval``, no other host. The dashboard needs nothing more. GraphiQL needs two
things more, each as narrow as it can be:

- ``data:`` fonts and images: its stylesheet embeds its fonts and two icons that way;
- a ``<style>`` element its dialogs (Radix, through react-remove-scroll) insert while
  open: its page gets a fresh nonce per response, for styles alone, which the bundle puts
  on that element (it reads the global ``__webpack_nonce__``, set by
  graph/static/graphiql.js from the page's meta tag).
"""

from __future__ import annotations

import secrets
from functools import cache
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from graph.view import MetricsGraphQL

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PAGE_HEADERS",
    "STATIC",
    "GraphQLWithGraphiQL",
    "content_security_policy",
    "page_routes",
]

STATIC: Final = Path(__file__).parent / "static"


def content_security_policy(*, style_nonce: str | None = None, data: bool = False) -> str:
    """A page's policy: scripts, styles, requests and frames of this origin only; with
    ``style_nonce``, style elements bearing it too; with ``data``, ``data:`` fonts and
    images."""
    style = f"'self' 'nonce-{style_nonce}'" if style_nonce else "'self'"
    embedded = "'self' data:" if data else "'self'"
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            f"style-src {style}",
            f"img-src {embedded}",
            f"font-src {embedded}",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


#: The dashboard's policy (and that of a static file opened directly).
CONTENT_SECURITY_POLICY: Final = content_security_policy()

PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_routes() -> list[BaseRoute]:
    """The dashboard at ``/`` and ``/dashboard``, and the static files under ``/static``."""
    return [
        Route("/", _dashboard, methods=["GET"]),
        Route("/dashboard", _dashboard, methods=["GET"]),
        Mount("/static", app=_Static(directory=STATIC), name="static"),
    ]


class GraphQLWithGraphiQL(MetricsGraphQL):
    """Our GraphQL view, whose browser page is our own GraphiQL instead of Strawberry's
    (which loads its scripts from a CDN). Requests for GraphQL are unchanged."""

    async def render_graphql_ide(self, request: Request) -> Response:
        nonce = secrets.token_urlsafe(18)
        headers = {
            **PAGE_HEADERS,
            "Content-Security-Policy": content_security_policy(style_nonce=nonce, data=True),
            "Cache-Control": "no-store",
        }
        return HTMLResponse(_graphiql_html().replace(_NONCE_MARK, nonce), headers=headers)


_NONCE_MARK = "__CSP_NONCE__"


@cache
def _graphiql_html() -> str:
    return (STATIC / "graphiql.html").read_text(encoding="utf-8")


async def _dashboard(request: Request) -> Response:
    return _page("dashboard.html")


def _page(name: str) -> Response:
    return FileResponse(STATIC / name, media_type="text/html", headers=PAGE_HEADERS)


class _Static(StaticFiles):
    """Static files, with ``nosniff`` and the page policy (for a file opened directly)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response
