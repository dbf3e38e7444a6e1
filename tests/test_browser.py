"""GraphiQL and the dashboard in a real Chromium (Debian's, through Selenium and
chromedriver), against a real ``message-metrics serve`` on a seeded database, with every
host but 127.0.0.1 unreachable.

Each state reached is saved as a screenshot under tests/browser/artifacts/ (git-ignored;
the paths are printed). Without Chromium the module skips; under ``CI`` it fails.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.browser.driver import (
    chromium,
    csp_violations,
    other_origins,
    requested_urls,
    require_browser,
    screenshot,
)
from tests.browser.site import Site, graphql, running_site

#: The browser's timezone: +05:30, so local days are not UTC days.
TIMEZONE = "Asia/Kolkata"
#: Chromium's ICU may name it by its older alias.
TIMEZONE_NAMES = {"Asia/Kolkata", "Asia/Calcutta"}

README_QUERY = "{ metrics { instance totalMessages messagesByType { key count } firstMessageAt } }"

METRICS_FIELDS = """instance instances totalMessages messagesReceived messagesSent
  messagesByType { key count } groupMessages individualMessages messagesWithMedia
  mediaByType { key count } messagesByStatus { key count } uniqueChats uniqueGroups
  uniqueContacts messagesLast7Days messagesLast30Days firstMessageAt lastMessageAt"""

EXPECTED_QUERY = f"""query($instances: [String!], $range: TimeRange!, $tz: String!,
    $interval: Interval!) {{
  metrics(instances: $instances, range: $range) {{ {METRICS_FIELDS} }}
  metricsByInstance(instances: $instances, range: $range) {{
    instance totalMessages messagesSent messagesReceived groupMessages individualMessages
    messagesWithMedia uniqueContacts
  }}
  series(instances: $instances, range: $range, interval: $interval, timezone: $tz) {{
    points {{ start end totalMessages messagesSent messagesReceived }}
  }}
}}"""

SCALAR_CARDS = (
    "totalMessages",
    "messagesSent",
    "messagesReceived",
    "groupMessages",
    "individualMessages",
    "messagesWithMedia",
    "uniqueChats",
    "uniqueGroups",
    "uniqueContacts",
    "messagesLast7Days",
    "messagesLast30Days",
)


@pytest.fixture(scope="module")
def site(mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_browser()
    log = tmp_path_factory.mktemp("browser") / "serve.log"
    with running_site(mongodb_uri=mongodb_uri, log=log) as running:
        yield running


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(site: Site, downloads: Path) -> Iterator[Any]:
    with chromium(downloads=downloads) as driver:
        driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": TIMEZONE})
        yield driver


def wait_for(driver: Any, condition: Callable[[Any], Any], *, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def fresh_dashboard(driver: Any, site: Site) -> None:
    """The dashboard in a tab that remembers no token."""
    driver.get(f"{site.base}/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{site.base}/")
    wait_for(driver, lambda d: by_id(d, "timezone").get_attribute("textContent"))


def enter_token(driver: Any, token: str) -> None:
    """Type the token and press Enter (the form's submit, from the keyboard)."""
    field = by_id(driver, "token")
    field.clear()
    field.send_keys(token)
    field.send_keys("\n")


def updates(driver: Any) -> int:
    """How many times the dashboard has drawn an answer since the page loaded."""
    return int(by_id(driver, "main").get_attribute("data-updates") or 0)


def wait_for_metrics(driver: Any, *, after: int = 0) -> None:
    """Until the dashboard has drawn more answers than ``after``, and is not loading."""
    wait_for(
        driver,
        lambda d: updates(d) > after and by_id(d, "main").get_attribute("aria-busy") is None,
    )


def choose_range(driver: Any, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    before = updates(driver)
    Select(by_id(driver, "range")).select_by_value(value)
    wait_for_metrics(driver, after=before)


def local_days(days: int, *, now: datetime) -> tuple[datetime, datetime]:
    """The last ``days`` local days of ``TIMEZONE`` ending with today: [from, to) in UTC."""
    zone = ZoneInfo(TIMEZONE)
    today = now.astimezone(zone).date()

    def midnight(day: date) -> datetime:
        return datetime.combine(day, clock_time(), zone).astimezone(UTC)

    return midnight(today - timedelta(days=days - 1)), midnight(today + timedelta(days=1))


def shown_range(driver: Any) -> tuple[datetime, datetime]:
    main = by_id(driver, "main")
    return (
        datetime.fromisoformat(main.get_attribute("data-from")),
        datetime.fromisoformat(main.get_attribute("data-to")),
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cards(driver: Any) -> dict[str, tuple[str, str]]:
    """Each card's field: (its machine value, its visible text)."""
    values: dict[str, list[str]] = driver.execute_script(
        """return Object.fromEntries([...document.querySelectorAll('#cards .card')].map(
             (card) => [card.dataset.field, [card.querySelector('dd').dataset.value,
                                            card.querySelector('dd').textContent]]));"""
    )
    return {field: (value, text) for field, (value, text) in values.items()}


def key_counts(driver: Any, table_id: str) -> list[dict[str, Any]]:
    rows = driver.execute_script(
        f"""return [...document.querySelectorAll('#{table_id} tr[data-key]')].map(
              (row) => [row.dataset.key, Number(row.dataset.count)]);"""
    )
    return [{"key": key, "count": count} for key, count in rows]


def chart_data(driver: Any, canvas_id: str) -> list[list[int]]:
    data: list[list[int]] = driver.execute_script(
        f"""return Chart.getChart(document.getElementById('{canvas_id}'))
                 .data.datasets.map((dataset) => dataset.data);"""
    )
    return data


def painted_pixels(driver: Any, canvas_id: str) -> int:
    """How many pixels of the canvas are not transparent."""
    count: int = driver.execute_script(
        f"""const canvas = document.getElementById('{canvas_id}');
            const pixels = canvas.getContext('2d')
              .getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] !== 0) painted += 1;
            return painted;"""
    )
    return count


def expected(site: Site, driver: Any, *, token: str, names: list[str]) -> dict[str, Any]:
    """The GraphQL answer for the range, instances, interval and timezone shown."""
    start, end = shown_range(driver)
    variables = {
        "instances": names,
        "range": {"from": iso(start), "to": iso(end)},
        "tz": by_id(driver, "timezone").get_attribute("textContent"),
        "interval": by_id(driver, "main").get_attribute("data-interval"),
    }
    data: dict[str, Any] = graphql(site, EXPECTED_QUERY, variables, token=token)
    return data


def assert_cards_equal(driver: Any, metrics: dict[str, Any]) -> None:
    shown = cards(driver)
    for field in SCALAR_CARDS:
        value, text = shown[field]
        assert int(value) == metrics[field], field
        assert int(text.replace(",", "")) == metrics[field], (field, text)
    for field in ("firstMessageAt", "lastMessageAt"):
        value, _ = shown[field]
        wanted = metrics[field]
        assert (datetime.fromisoformat(value) if value else None) == (
            datetime.fromisoformat(wanted) if wanted else None
        ), field


def unlabelled_controls(driver: Any) -> list[str]:
    controls: list[str] = driver.execute_script(
        """return [...document.querySelectorAll('input, select, button')]
             .filter((el) => el.offsetParent !== null)
             .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                             && !(el.tagName === 'BUTTON' && el.textContent.trim()))
             .map((el) => el.outerHTML);"""
    )
    return controls


def test_graphiql_runs_the_readme_query_from_our_files_alone(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    requested_urls(browser)  # drop what the browser did before this page
    browser.get(f"{site.base}/graphql")
    headers = wait_for(
        browser,
        lambda d: d.execute_script(
            """return [...document.querySelectorAll('.CodeMirror')]
                 .map((e) => e.CodeMirror.getValue())
                 .find((text) => text.includes('"token"'));"""
        ),
    )
    assert "<your token>" in headers  # the placeholder the README tells to replace
    browser.execute_script(
        """const query = arguments[0], headers = arguments[1];
           const editors = [...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror);
           editors.find((e) => e.getValue().includes('"token"')).setValue(headers);
           editors[0].setValue(query);""",
        README_QUERY,
        f'{{"token": "{site.account_token}"}}',
    )
    browser.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    result = wait_for(
        browser,
        lambda d: d.execute_script(
            """const out = document.querySelector('.result-window .CodeMirror');
               const text = out && out.CodeMirror.getValue();
               return text && text.includes('totalMessages') ? text : null;"""
        ),
    )
    answer = graphql(site, README_QUERY, token=site.account_token)
    assert json.loads(result)["data"] == answer
    # A dialog inserts a <style> element: allowed by the page's nonce, not by 'unsafe-inline'.
    browser.find_element(By.CSS_SELECTOR, '[aria-label="Open settings dialog"]').click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '[role="dialog"]'))
    screenshot(browser, "graphiql")
    assert csp_violations(browser) == []
    urls = requested_urls(browser)
    assert any(url.endswith("/static/vendor/graphiql/graphiql.min.js") for url in urls)
    assert other_origins(urls, base=site.base) == []


def test_the_dashboard_shows_the_graphql_answer_for_the_range(browser: Any, site: Site) -> None:
    fresh_dashboard(browser, site)
    requested_urls(browser)
    enter_token(browser, site.account_token)
    wait_for_metrics(browser)
    assert by_id(browser, "timezone").text in TIMEZONE_NAMES
    assert site.account_token not in browser.current_url
    stored = browser.execute_script("return sessionStorage.getItem('messageMetrics.token')")
    assert stored == site.account_token
    names = [
        box.get_attribute("value")
        for box in browser.find_elements("css selector", "#instances input")
    ]
    assert sorted(names) == ["marketing", "sales", "support"]

    for preset, days, interval in (("7", 7, "HOUR"), ("30", 30, "DAY")):
        before = datetime.now(UTC)
        if preset != "7":  # 7 days is the page's default
            choose_range(browser, preset)
        shown = shown_range(browser)
        assert shown in (local_days(days, now=before), local_days(days, now=datetime.now(UTC)))
        assert by_id(browser, "main").get_attribute("data-interval") == interval
        answer = expected(site, browser, token=site.account_token, names=names)
        metrics = answer["metrics"]
        assert metrics["totalMessages"] > 0
        assert_cards_equal(browser, metrics)
        assert key_counts(browser, "type-table") == metrics["messagesByType"]
        assert key_counts(browser, "status-table") == metrics["messagesByStatus"]
        assert key_counts(browser, "media-table") == metrics["mediaByType"]
        points = answer["series"]["points"]
        assert len(points) == days * (24 if interval == "HOUR" else 1)
        assert chart_data(browser, "series-chart") == [
            [point["messagesSent"] for point in points],
            [point["messagesReceived"] for point in points],
        ]
        assert chart_data(browser, "type-chart") == [
            [item["count"] for item in metrics["messagesByType"]]
        ]
        for canvas in ("series-chart", "type-chart", "status-chart", "media-chart"):
            assert painted_pixels(browser, canvas) > 1000, canvas
        rows = browser.execute_script(
            """return [...document.querySelectorAll('#per-instance tbody tr')].map((row) => [
                 row.dataset.instance,
                 Object.fromEntries([...row.querySelectorAll('td[data-field]')].map(
                   (cell) => [cell.dataset.field, Number(cell.dataset.value)]))]);"""
        )
        assert [
            [row["instance"], {k: v for k, v in row.items() if k != "instance"}]
            for row in answer["metricsByInstance"]
        ] == rows

    screenshot(browser, "dashboard-1280")
    assert unlabelled_controls(browser) == []
    assert csp_violations(browser) == []
    assert other_origins(requested_urls(browser), base=site.base) == []
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
    )
    try:
        wait_for(browser, lambda d: d.execute_script("return window.innerWidth") == 390)
        widths = browser.execute_script(
            "return [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert widths[0] <= widths[1], "the page scrolls sideways at 390 px"
        screenshot(browser, "dashboard-390")
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_csv_download_holds_the_series_shown(browser: Any, site: Site, downloads: Path) -> None:
    fresh_dashboard(browser, site)
    enter_token(browser, site.instance_tokens["sales"])
    wait_for_metrics(browser)
    answer = expected(site, browser, token=site.instance_tokens["sales"], names=["sales"])
    by_id(browser, "csv").click()
    path = wait_for(browser, lambda _: next(downloads.glob("*.csv"), None))
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    points = answer["series"]["points"]
    assert [
        (row["start"], row["end"], int(row["messagesSent"]), int(row["messagesReceived"]))
        for row in rows
    ] == [
        (point["start"], point["end"], point["messagesSent"], point["messagesReceived"])
        for point in points
    ]
    assert sum(int(row["totalMessages"]) for row in rows) == sum(
        point["totalMessages"] for point in points
    )


def test_an_unknown_token_says_so(browser: Any, site: Site) -> None:
    fresh_dashboard(browser, site)
    enter_token(browser, "not-a-token-of-anyone")
    message = wait_for(browser, lambda d: (box := by_id(d, "message")).is_displayed() and box)
    assert message.get_attribute("data-state") == "unauthenticated"
    assert "not accepted" in message.text
    assert not by_id(browser, "main").is_displayed()
    screenshot(browser, "dashboard-401")


def test_the_dashboards_client_names_forbidden_and_unknown_instances(
    browser: Any, site: Site
) -> None:
    """The states of 403 and 404, as the page's own module classifies the real answers."""
    fresh_dashboard(browser, site)
    states = browser.execute_async_script(
        """const done = arguments[arguments.length - 1];
           const [account, sales] = [arguments[0], arguments[1]];
           const query = 'query($i: [String!]) { metrics(instances: $i) { totalMessages } }';
           import('/static/dashboard/api.js').then(async ({ graphql }) => {
             const state = (token, names) => graphql({ token, query, variables: { i: names } })
               .then(() => 'ok', (error) => [error.state, error.message]);
             done([await state(sales, ['support']), await state(account, ['elsewhere'])]);
           });""",
        site.account_token,
        site.instance_tokens["sales"],
    )
    (forbidden, forbidden_message), (not_found, not_found_message) = states
    assert forbidden == "forbidden"
    assert not_found == "not-found"
    assert "elsewhere" in not_found_message
    assert forbidden_message


def test_a_rate_limited_token_gets_a_live_countdown(browser: Any, site: Site) -> None:
    token = site.instance_tokens["marketing"]
    ten = "{ " + " ".join(f"i{n}: instances {{ name }}" for n in range(10)) + " }"
    for _ in range(12):  # 10 points each: the bucket of 100 runs out
        response = httpx.post(
            f"{site.base}/graphql", json={"query": ten}, headers={"token": token}, timeout=30
        )
        if response.status_code == 429:
            break
    else:
        pytest.fail("the bucket never ran out")
    fresh_dashboard(browser, site)
    enter_token(browser, token)
    message = wait_for(browser, lambda d: (box := by_id(d, "message")).is_displayed() and box)
    assert message.get_attribute("data-state") == "rate-limited"
    assert "Too many requests" in message.text
    first = int(by_id(browser, "retry-countdown").text)
    assert 0 < first <= 60
    assert not by_id(browser, "refresh").is_enabled()
    screenshot(browser, "dashboard-429")
    wait_for(browser, lambda d: int(by_id(d, "retry-countdown").text) < first, timeout=5)


def test_ignoring_group_messages_changes_the_next_metrics(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    fresh_dashboard(browser, site)
    enter_token(browser, site.account_token)
    wait_for_metrics(browser)
    names = ["marketing", "sales", "support"]
    before = expected(site, browser, token=site.account_token, names=names)
    sales = next(row for row in before["metricsByInstance"] if row["instance"] == "sales")
    assert sales["groupMessages"] > 0
    toggle = browser.find_element(By.CSS_SELECTOR, 'input[data-instance="sales"]')
    assert not toggle.is_selected()
    drawn = updates(browser)
    toggle.send_keys(Keys.SPACE)  # from the keyboard
    wait_for_metrics(browser, after=drawn)
    after = expected(site, browser, token=site.account_token, names=names)
    total = after["metrics"]["totalMessages"]
    assert total == before["metrics"]["totalMessages"] - sales["groupMessages"]
    assert_cards_equal(browser, after["metrics"])
    assert browser.find_element(By.CSS_SELECTOR, 'input[data-instance="sales"]').is_selected()
    instances = graphql(
        site, "{ instances { name ignoreGroupMessages } }", token=site.account_token
    )
    assert {"name": "sales", "ignoreGroupMessages": True} in instances["instances"]
    screenshot(browser, "dashboard-ignoring-groups")
    # And back, for the other tests.
    drawn = updates(browser)
    browser.find_element(By.CSS_SELECTOR, 'input[data-instance="sales"]').send_keys(Keys.SPACE)
    wait_for_metrics(browser, after=drawn)
    assert int(cards(browser)["totalMessages"][0]) == before["metrics"]["totalMessages"]
