"""The database client's timeouts: an unreachable database must be reported fast."""

from __future__ import annotations

from resolvers import open_client


async def test_server_selection_timeout_is_not_overridden_by_a_client_wide_timeout() -> None:
    client = open_client(
        "mongodb://127.0.0.1:1/?directConnection=true",
        server_selection_timeout_ms=1500,
        socket_timeout_ms=30_000,
    )
    async with client:
        # a client-wide timeoutMS would make server selection wait the whole query budget
        assert client.options.timeout is None
        assert client.options.server_selection_timeout == 1.5
        assert client.options.pool_options.socket_timeout == 30.0
