"""A contact import's page in a real browser: every counter on it follows the job."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from apps.contacts.models import ContactImport
from apps.contacts.services import contact_import_run
from tests.browser import admin_login, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_the_import_page_shows_the_final_counters_without_a_reload(
    browser, live_server, staff_user, tmp_path
):
    path = tmp_path / "people.csv"
    path.write_text("email,first_name\na@example.com,A\n\nb@example.com,B\nA@example.com,Z\n")
    admin_login(browser, live_server.url, "operator", "pw-operator")
    browser.get(live_server.url + "/admin/contacts/contactimport/upload/")
    browser.find_element(By.NAME, "file").send_keys(str(path))
    browser.find_element(By.NAME, "_upload").click()
    wait_for(lambda: "/change/" in browser.current_url, message="the import's page")

    def field(name: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, f".field-{name} .readonly").text

    assert field("status") == "Pending" and field("rows_read") == "0"
    job = ContactImport.objects.get()
    contact_import_run(import_id=job.pk)  # what the q2 worker does

    wait_for(lambda: field("status") == "Completed", message="the status field to follow")
    counters = {
        name: field(name)
        for name in ("rows_read", "rows_created", "rows_unchanged", "rows_skipped")
    }
    assert counters == {
        "rows_read": "4",
        "rows_created": "2",
        "rows_unchanged": "0",
        "rows_skipped": "2",
    }
    box = browser.find_element(By.ID, "import-progress").text
    assert "Completed" in box and "skipped 2" in box
    assert field("finished_at") not in ("", "-")
