"""The browser fixture itself: a real Chromium logs into the real admin."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from tests.browser import admin_login, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_person_logs_into_the_admin_with_headless_chromium(browser, live_server, staff_user):
    admin_login(browser, live_server.url, "operator", "pw-operator")
    assert "operator" in browser.find_element(By.ID, "user-tools").text.lower()
    assert browser.title.startswith("Site administration")


def test_a_wrong_password_stays_on_the_login_page(browser, live_server, staff_user):
    browser.get(live_server.url + "/admin/login/")
    browser.find_element(By.NAME, "username").send_keys("operator")
    browser.find_element(By.NAME, "password").send_keys("not the password")
    browser.find_element(By.CSS_SELECTOR, "[type=submit]").click()
    # The answer to the POST is a new page: wait for it rather than read the old one.
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".errornote"),
        message="the login page's error note",
    )
    assert not browser.find_elements(By.ID, "user-tools")
