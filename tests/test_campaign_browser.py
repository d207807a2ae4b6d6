"""A campaign end to end in the admin, in a real browser (headless Chromium).

An operator composes a task for a tag, sees its audience and its preview, sends a test,
queues it and watches the bar reach 100 % while a real SMTP sink receives every mail (a
dispatcher loop sends, against the live server's database). A tenant then sees only its
own objects and gets 404 on another tenant's.

``EDM_SCREENSHOTS=DIR`` saves the pages as PNG files there (the README's pictures).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from apps.contacts.services import contacts_bulk_upsert
from apps.core.services import tenant_create
from apps.dispatch import services as dispatch
from apps.dispatch.models import SubTask, Task, TestSend
from apps.dispatch.tests.helpers import ThreadedDispatcher
from apps.services.models import EmailService
from apps.services.selectors import pool_default
from tests.browser import admin_login, screenshot, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PEOPLE = [("Ada", "Lovelace"), ("Alan", "Turing"), ("Grace", "Hopper"), ("Edsger", "Dijkstra")]
CONTACTS = 24


def _shot(browser, name: str, *, at: str | None = None) -> None:
    """Save the window (1400×1000), scrolled to the element ``at`` when given."""
    folder = os.environ.get("EDM_SCREENSHOTS")
    if not folder:
        return
    if at:
        browser.execute_script(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});"
            "window.scrollBy(0, -12);",
            at,
        )
        time.sleep(0.2)
    screenshot(browser, Path(folder) / f"{name}.png")
    browser.execute_script("window.scrollTo(0, 0);")


def _text(browser, selector: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def _choose_in_autocomplete(browser, field: str, term: str) -> None:
    """Pick ``term`` in the admin's autocomplete (select2) widget of ``field``."""
    container = browser.find_element(
        By.CSS_SELECTOR, f"#id_{field} + .select2-container .select2-selection"
    )
    container.click()
    search = wait_for(
        lambda: [
            e
            for e in browser.find_elements(By.CSS_SELECTOR, ".select2-search__field")
            if e.is_displayed()
        ],
        message="the autocomplete's search box",
    )[0]
    search.send_keys(term)
    wait_for(
        lambda: any(
            term in e.text
            for e in browser.find_elements(By.CSS_SELECTOR, ".select2-results__option")
        ),
        message=f"{term!r} among the autocomplete's answers",
    )
    search.send_keys(Keys.ENTER)


@pytest.fixture
def campaign_data(staff_user, smtp_sink):
    """The operator's own contacts in a tag, and a service of the default pool that
    sends to the sink slowly enough (24 messages over ~8 s, four polls of the page) that the
    bar is seen between 0 and 100 % on a loaded machine too."""
    rows = [
        {
            "email": f"{first.lower()}{i}@example.com",
            "first_name": first,
            "last_name": last,
            "attributes": {"city": "London"},
        }
        for i in range(CONTACTS)
        for first, last in [PEOPLE[i % len(PEOPLE)]]
    ]
    contacts_bulk_upsert(owner=staff_user, rows=rows, tag_names=["launch"])
    EmailService.objects.create(
        pool=pool_default(),
        name="sink",
        kind="smtp",
        host="127.0.0.1",
        port=smtp_sink.port,
        from_email="news@example.com",
        from_name="EDM",
        sending_rate=0.35,
        daily_quota=0,
    )
    return rows


def test_an_operator_composes_tests_queues_and_watches_a_campaign(
    browser, live_server, staff_user, smtp_sink, campaign_data
):
    received = smtp_sink.handler.messages
    admin_login(browser, live_server.url, "operator", "pw-operator")

    # Compose.
    browser.get(live_server.url + "/admin/dispatch/task/add/")
    browser.find_element(By.ID, "id_name").send_keys("Launch news")
    browser.find_element(By.ID, "id_subject").send_keys("Hello {{ contact.first_name }}!")
    browser.find_element(By.ID, "id_body_text").send_keys(
        "Dear {{ contact.first_name }},\nwe launched. Greetings to {{ contact.attributes.city }}."
    )
    browser.find_element(By.ID, "id_body_html").send_keys(
        "<h1>Hello {{ contact.first_name }}</h1><p>We <b>launched</b>.</p>"
        "<script>document.title='pwned'</script>"
    )
    _choose_in_autocomplete(browser, "include_tags", "launch")
    wait_for(
        lambda: _text(browser, "#task-audience .audience-recipients") == str(CONTACTS),
        message="the live audience to count the tag's contacts",
    )
    browser.find_element(By.NAME, "_continue").click()
    wait_for(lambda: "/change/" in browser.current_url, message="the saved task's page")
    task = Task.objects.get(name="Launch news")
    assert task.status == Task.Status.DRAFT and task.owner == staff_user

    # Audience and preview.
    wait_for(
        lambda: _text(browser, "#task-audience .audience-recipients") == str(CONTACTS),
        message="the audience of the saved task",
    )
    assert "0 unsubscribed" in _text(browser, "#task-audience .audience-skipped")
    wait_for(
        lambda: _text(browser, "#task-preview .preview-subject") == "Hello Ada!",
        message="the preview's subject",
    )
    assert "Greetings to London." in _text(browser, "#task-preview .preview-text")
    frame = browser.find_element(By.CSS_SELECTOR, "#task-preview iframe.preview-html")
    assert frame.get_attribute("sandbox") == ""  # no script, no navigation, no same-origin
    browser.switch_to.frame(frame)
    assert wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text) == "Hello Ada"
    browser.switch_to.default_content()
    assert browser.title != "pwned", "the HTML body's script must not run"
    _shot(browser, "task-compose", at="#task-audience")

    # Send a test: recorded, never counted in the task.
    to = browser.find_element(By.ID, "test-to")
    to.clear()
    to.send_keys("qa@example.com")
    browser.find_element(By.ID, "test-send").click()
    wait_for(
        lambda: "sent to qa@example.com" in _text(browser, "#task-test .test-result"),
        message="the test send's result",
    )
    wait_for(lambda: len(received) == 1, message="the test message at the sink")
    assert received[0].rcpt_tos == ["qa@example.com"]
    assert received[0].headers["Subject"] == "[Test] Hello Ada!"
    assert received[0].headers["X-EDM-Test"] == "1"
    assert TestSend.objects.filter(task=task, ok=True).count() == 1
    assert not SubTask.objects.filter(task=task).exists()

    # Queue, and watch the bar reach 100 % while a dispatcher sends.
    with ThreadedDispatcher():
        browser.find_element(By.ID, "task-queue").click()
        browser.switch_to.alert.accept()
        wait_for(
            lambda: browser.find_elements(By.ID, "task-progress"), message="the progress panel"
        )
        seen_moving = []

        def at_100() -> bool:
            percent = _text(browser, "#task-progress .task-percent")
            if percent and percent not in ("0", "0.0", "100", "100.0"):
                seen_moving.append(percent)
                if len(seen_moving) == 1:
                    _shot(browser, "task-progress")
            return percent in ("100", "100.0")

        wait_for(at_100, timeout=60, message="the progress bar to reach 100 %")
        wait_for(
            lambda: _text(browser, "#task-progress .task-status") == "Completed",
            message="the page to show the task completed",
        )
    assert _text(browser, "#task-progress .task-count-sent") == str(CONTACTS)
    assert _text(browser, "#task-progress .task-rate").endswith("/s")
    assert "after queueing" in _text(browser, "#task-progress .task-wait")
    assert seen_moving, "the bar moved without a reload"

    wanted = sorted(row["email"] for row in campaign_data)
    wait_for(lambda: len(received) == CONTACTS + 1, message="every mail at the sink")
    time.sleep(0.3)  # nothing more may arrive
    campaign = sorted(to for m in received[1:] for to in m.rcpt_tos)
    assert campaign == wanted, "each recipient received the campaign exactly once"
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED and task.total == CONTACTS
    assert TestSend.objects.filter(task=task).count() == 1


def test_a_tenant_sees_only_its_own_objects_and_404_for_anothers(browser, live_server, db):
    alice, _ = tenant_create(username="alice-tenant", password="alice-long-password")
    bob, _ = tenant_create(username="bob-tenant", password="bob-long-password")
    pool_default()
    for owner, name in ((alice, "alice"), (bob, "bob")):
        contacts_bulk_upsert(
            owner=owner, rows=[{"email": f"{name}@example.com"}], tag_names=[f"{name}-list"]
        )
        dispatch.task_create(
            owner=owner,
            name=f"{name}'s task",
            subject="s",
            body_text="b",
            include_tags=owner.tags.values_list("pk", flat=True),
        )
    theirs = Task.objects.get(owner=alice)

    admin_login(browser, live_server.url, "bob-tenant", "bob-long-password")
    nav = browser.find_element(By.ID, "content-main").text
    assert "Tasks" in nav and "Email services" not in nav and "Users" not in nav
    browser.get(live_server.url + "/admin/dispatch/task/")
    listing = browser.find_element(By.ID, "result_list").text
    assert "bob's task" in listing and "alice's task" not in listing
    browser.get(live_server.url + "/admin/contacts/contact/")
    listing = browser.find_element(By.ID, "result_list").text
    assert "bob@example.com" in listing and "alice@example.com" not in listing
    _shot(browser, "tenant-tasks")

    for path in (
        f"/admin/dispatch/task/{theirs.pk}/change/",
        f"/admin/dispatch/task/{theirs.pk}/history/",
        f"/admin/dispatch/task/{theirs.pk}/delete/",
        f"/admin/contacts/contact/{alice.contacts.get().pk}/change/",
        f"/admin/contacts/tag/{alice.tags.get().pk}/change/",
    ):
        browser.get(live_server.url + path)
        assert "Not Found" in browser.find_element(By.TAG_NAME, "body").text, path
    browser.get(live_server.url + "/admin/services/emailservice/")
    assert "403" in browser.title or "Forbidden" in browser.find_element(By.TAG_NAME, "body").text
