"""Helpers for the browser tests (headless Chromium through selenium).

The ``browser`` fixture lives in the root ``conftest.py``; pages are served by
pytest-django's ``live_server``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver


def admin_login(browser: WebDriver, base_url: str, username: str, password: str) -> None:
    """Log in through ``/admin/login/`` as a person would; fails unless it lands in the admin."""
    browser.get(base_url.rstrip("/") + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys(username)
    browser.find_element(By.NAME, "password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    wait_for(
        lambda: browser.find_elements(By.ID, "user-tools"),
        message=f"{username} to be logged into the admin (page: {browser.title!r})",
    )


def wait_for(condition: Callable[[], object], *, timeout: float = 10, message: str = "") -> object:
    """Poll ``condition`` until it returns something truthy and return that; fail after
    ``timeout`` seconds, naming ``message``. An element that is missing or went stale
    while the page changes counts as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (NoSuchElementException, StaleElementReferenceException):
            # The page is being replaced under the condition (a click just navigated).
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            waited = message or condition
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {waited}")
        time.sleep(0.1)


def screenshot(browser: WebDriver, path: str | Path) -> Path:
    """Save a PNG of the current page (for the docs, or to look at a failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(path))
    return path
