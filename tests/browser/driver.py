"""Headless Chromium for the browser tests, from the system's packages.

The browser is Debian's ``chromium`` driven by its ``chromedriver`` (both from apt; the
tests never download a browser). Without them the tests skip, except under ``CI``, where
they fail: `.ci/run` installs them.

Every request to a host other than 127.0.0.1 fails at name resolution
(``--host-resolver-rules``), as on a machine without internet, and the performance log
records every request the pages made, so a test can prove none went elsewhere. Content
Security Policy violations are collected in ``window.__cspViolations`` from the first
script of every document on.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

__all__ = [
    "ARTIFACTS",
    "CHROMEDRIVER",
    "CHROMIUM",
    "chromium",
    "csp_violations",
    "requested_urls",
    "require_browser",
    "screenshot",
]

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))

#: Screenshots of every state the tests reach (git-ignored).
ARTIFACTS = Path(__file__).parent / "artifacts"

_RECORD_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push({
    directive: event.violatedDirective, blocked: event.blockedURI, sample: event.sample,
  });
});
"""


def require_browser() -> None:
    """Skip (fail under ``CI``) unless Chromium, chromedriver and Selenium are here."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    needed = ", ".join(missing)
    reason = f"the browser tests need {needed} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium(
    *, width: int = 1280, height: int = 900, downloads: Path | None = None
) -> Iterator[Any]:
    """A headless Chromium session (a Selenium ``WebDriver``) with its own empty profile."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = Path(tempfile.mkdtemp(prefix="mm-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--lang=en-US",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    if downloads is not None:
        options.add_experimental_option(
            "prefs",
            {"download.default_directory": str(downloads), "download.prompt_for_download": False},
        )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": _RECORD_CSP})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def requested_urls(driver: Any) -> list[str]:
    """Every URL the browser requested since the last call (from the performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def other_origins(urls: list[str], *, base: str) -> list[str]:
    """The URLs of ``urls`` not on ``base``'s origin (``data:`` and ``blob:`` are local)."""
    origin = urlsplit(base)[:2]
    return [
        url
        for url in urls
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url)[:2] != origin
    ]


def csp_violations(driver: Any) -> list[dict[str, str]]:
    violations: list[dict[str, str]] = driver.execute_script("return window.__cspViolations || []")
    return violations


def screenshot(driver: Any, name: str) -> Path:
    """Save the whole page as ``ARTIFACTS/<name>.png`` (the path is printed, so a failing
    run says where to look)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    # The window's width, not the content's: without a scrollbar the page gets it all.
    width = max(size["width"], driver.execute_script("return window.innerWidth"))
    clip = {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path
