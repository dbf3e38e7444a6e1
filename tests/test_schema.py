"""The GraphQL schema through ``schema.execute``: auth, selection and errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graphql import build_schema
from strawberry.printer import print_schema

from graph import schema
from graph.context import Context
from resolvers import Database, authenticate
from tests.factories import NOW, Tenant, make_tenant, message

QUERY = """query ($instances: [String!]) {
  metrics(instances: $instances) { instance instances totalMessages firstMessageAt
    messagesByType { key count } }
}"""


async def _run(db: Database, token: str | None, instances: Any = None) -> Any:
    caller = await authenticate(db=db, token=token)
    context = Context(db=db, caller=caller, clock=lambda: NOW)
    variables = {} if instances is None else {"instances": instances}
    return await schema.execute(QUERY, variable_values=variables, context_value=context)


def _code(result: Any) -> str:
    assert result.errors, "expected an error"
    return result.errors[0].extensions["code"]


async def _acme(db: Database) -> Tenant:
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    await db.messages.insert_many(
        [
            message(tenant.instance_ids["sales"], days_ago=2),
            message(tenant.instance_ids["support"], days_ago=5),
            message(tenant.instance_ids["support"], isGroup=True, chatId="g@g.us"),
        ]
    )
    return tenant


def test_schema_file_matches_the_code() -> None:
    exported = Path(__file__).parents[1].joinpath("schema.graphql").read_text(encoding="utf-8")
    assert exported == print_schema(schema) + "\n"


async def test_account_token_without_instances_sees_every_instance(db: Database) -> None:
    tenant = await _acme(db)
    result = await _run(db, tenant.account_token)
    assert result.errors is None
    metrics = result.data["metrics"]
    assert metrics["instances"] == ["sales", "support"]
    assert metrics["instance"] == "sales,support"
    assert metrics["totalMessages"] == 2  # support ignores its group message


async def test_named_instances_echo_the_list_and_count_duplicates_once(db: Database) -> None:
    tenant = await _acme(db)
    result = await _run(db, tenant.account_token, [" sales", "sales", "", "support "])
    metrics = result.data["metrics"]
    assert metrics["instance"] == "sales,sales,support"
    assert metrics["instances"] == ["sales", "support"]
    assert metrics["totalMessages"] == 2


async def test_dates_are_utc_with_a_trailing_z(db: Database) -> None:
    tenant = await _acme(db)
    result = await _run(db, tenant.account_token, ["sales"])
    assert result.data["metrics"]["firstMessageAt"] == "2026-11-23T12:00:00Z"


async def test_missing_token_is_unauthenticated(db: Database) -> None:
    await _acme(db)
    assert _code(await _run(db, None)) == "UNAUTHENTICATED"


async def test_unknown_token_is_unauthenticated(db: Database) -> None:
    await _acme(db)
    assert _code(await _run(db, "not-a-token")) == "UNAUTHENTICATED"


async def test_instance_token_reads_its_own_instance(db: Database) -> None:
    tenant = await _acme(db)
    own = await _run(db, tenant.instance_tokens["sales"])
    assert own.data["metrics"]["instances"] == ["sales"]
    named = await _run(db, tenant.instance_tokens["sales"], ["sales"])
    assert named.data["metrics"]["totalMessages"] == 1


async def test_instance_token_naming_another_instance_is_forbidden(db: Database) -> None:
    tenant = await _acme(db)
    result = await _run(db, tenant.instance_tokens["sales"], ["sales", "support"])
    assert _code(result) == "FORBIDDEN"
    assert result.data is None


async def test_instance_token_naming_a_nonexistent_instance_is_forbidden_too(db: Database) -> None:
    tenant = await _acme(db)
    assert _code(await _run(db, tenant.instance_tokens["sales"], ["nope"])) == "FORBIDDEN"


async def test_unknown_name_is_not_found_and_named(db: Database) -> None:
    tenant = await _acme(db)
    result = await _run(db, tenant.account_token, ["sales", "ghost"])
    assert _code(result) == "NOT_FOUND"
    assert '"ghost"' in result.errors[0].message


async def test_other_accounts_instance_looks_exactly_like_a_missing_one(db: Database) -> None:
    tenant = await _acme(db)
    await make_tenant(db, name="Other", instances={"theirs": False})
    theirs = await _run(db, tenant.account_token, ["theirs"])
    missing = await _run(db, tenant.account_token, ["nothing"])
    assert _code(theirs) == _code(missing) == "NOT_FOUND"
    assert theirs.errors[0].message.replace("theirs", "X") == missing.errors[0].message.replace(
        "nothing", "X"
    )


async def test_empty_list_is_bad_user_input(db: Database) -> None:
    tenant = await _acme(db)
    assert _code(await _run(db, tenant.account_token, [" ", ""])) == "BAD_USER_INPUT"


async def test_too_long_name_and_too_many_names_are_bad_user_input(db: Database) -> None:
    tenant = await _acme(db)
    assert _code(await _run(db, tenant.account_token, ["x" * 129])) == "BAD_USER_INPUT"
    assert _code(await _run(db, tenant.account_token, [f"i{n}" for n in range(101)])) == (
        "BAD_USER_INPUT"
    )


async def test_account_without_instances_gets_zero_metrics(db: Database) -> None:
    tenant = await make_tenant(db, name="Empty", instances={})
    result = await _run(db, tenant.account_token)
    assert result.data["metrics"]["instances"] == []
    assert result.data["metrics"]["totalMessages"] == 0


async def test_invalid_query_gets_a_code(db: Database) -> None:
    context = Context(db=db, caller=None, clock=lambda: NOW)
    result = await schema.execute("{ metrics { nope } }", context_value=context)
    assert _code(result) == "BAD_USER_INPUT"


async def test_too_many_aliases_are_refused(db: Database) -> None:
    tenant = await _acme(db)
    context = Context(
        db=db, caller=await authenticate(db=db, token=tenant.account_token), clock=lambda: NOW
    )
    aliases = " ".join(f"m{n}: metrics {{ totalMessages }}" for n in range(11))
    result = await schema.execute(f"{{ {aliases} }}", context_value=context)
    assert result.errors and "aliases" in result.errors[0].message.lower()


async def test_fractional_dates_keep_milliseconds(db: Database) -> None:
    tenant = await make_tenant(db)
    stamp = datetime(2026, 11, 20, 8, 30, 15, 120_000, tzinfo=UTC)
    await db.messages.insert_one(message(tenant.instance_ids["sales"], timestamp=stamp))
    result = await _run(db, tenant.account_token, ["sales"])
    assert result.data["metrics"]["firstMessageAt"] == "2026-11-20T08:30:15.120Z"


#: The SDL of issue 10 as written there, long lines wrapped (plus the types it refers to).
ISSUE_10_SDL = """
"A half-open interval [from, to)."
input TimeRange { from: DateTime!  to: DateTime! }
enum Interval { HOUR DAY WEEK MONTH }

type Query {
  metrics(instances: [String!], range: TimeRange): Metrics!
  "One Metrics per distinct instance, in the order named (or by name when null)."
  metricsByInstance(instances: [String!], range: TimeRange): [Metrics!]!
  series(instances: [String!], range: TimeRange!, interval: Interval!,
         timezone: String! = "UTC"): Series!
  "The instances the token can see."
  instances: [Instance!]!
}
type Series { instance: String!  instances: [String!]!  interval: Interval!  timezone: String!
              points: [SeriesPoint!]! }
type SeriesPoint {
  start: DateTime!  end: DateTime!
  totalMessages: Int!  messagesSent: Int!  messagesReceived: Int!
  groupMessages: Int!  individualMessages: Int!  messagesWithMedia: Int!
  messagesByType: [KeyCount!]!  messagesByStatus: [KeyCount!]!
}
type Instance { name: String!  ignoreGroupMessages: Boolean!  createdAt: DateTime
                totalMessages: Int!  lastMessageAt: DateTime }
type Mutation {
  updateInstanceSettings(instance: String!, ignoreGroupMessages: Boolean!): Instance!
}
scalar DateTime
type KeyCount { key: String!  count: Int! }
type Metrics { instance: String! }
"""


def _fields(named: Any) -> dict[str, Any]:
    """Each field (or input field) by name: its type, and its arguments with defaults."""
    shape: dict[str, Any] = {}
    for name, field in named.fields.items():
        args = getattr(field, "args", {})
        shape[name] = (
            str(field.type),
            [(arg, str(a.type), a.default_value) for arg, a in args.items()],
        )
    return shape


def test_the_schema_has_the_sdl_of_issue_10() -> None:
    wanted = build_schema(ISSUE_10_SDL)
    ours = build_schema(print_schema(schema))
    for name in ("TimeRange", "Series", "SeriesPoint", "Instance", "Mutation"):
        assert _fields(ours.type_map[name]) == _fields(wanted.type_map[name]), name
    ours_query, wanted_query = _fields(ours.type_map["Query"]), _fields(wanted.type_map["Query"])
    assert {name: ours_query[name] for name in wanted_query} == wanted_query
    assert set(ours_query) - set(wanted_query) == {"rateLimit"}
    interval = ours.type_map["Interval"]
    assert list(interval.values) == ["HOUR", "DAY", "WEEK", "MONTH"]
    assert ours.type_map["TimeRange"].description == "A half-open interval [from, to)."
    query = ours.type_map["Query"].fields
    assert query["metricsByInstance"].description == (
        "One Metrics per distinct instance, in the order named (or by name when null)."
    )
    assert query["instances"].description == "The instances the token can see."
