"""The public pages in a real headless Chromium: what a contact sees and clicks."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from apps.contacts.models import Contact, ContactTag, Tag
from apps.deliverability import links
from apps.deliverability.models import Suppression
from tests.browser import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_contact_confirms_the_unsubscribe_with_the_button(browser, live_server, user, tmp_path):
    contact = Contact.objects.create(owner=user, email="ann@example.org")
    url = links.unsubscribe_url(contact_id=contact.pk, task_id=1, base=live_server.url)
    browser.get(url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "Unsubscribe?"
    browser.save_screenshot(str(tmp_path / "unsubscribe-confirm.png"))
    contact.refresh_from_db()
    assert contact.status == "active"  # opening the page changes nothing
    browser.find_element(By.CSS_SELECTOR, "button.primary").click()
    wait_for(
        lambda: browser.find_element(By.TAG_NAME, "h1").text == "You are unsubscribed",
        message="the unsubscribed page",
    )
    browser.save_screenshot(str(tmp_path / "unsubscribe-done.png"))
    contact.refresh_from_db()
    assert contact.status == "unsubscribed"
    assert Suppression.objects.filter(email="ann@example.org").exists()


def test_a_contact_leaves_one_tag_on_the_preferences_page(browser, live_server, user, tmp_path):
    contact = Contact.objects.create(owner=user, email="bob@example.org")
    for name in ("Monthly news", "Product offers"):
        tag = Tag.objects.create(owner=user, name=name, contact_count=1)
        ContactTag.objects.create(tag=tag, contact=contact)
    url = links.unsubscribe_url(contact_id=contact.pk, task_id=1, base=live_server.url)
    browser.get(url + "/preferences")
    browser.save_screenshot(str(tmp_path / "preferences.png"))
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox]")
    assert len(boxes) == 2
    boxes[1].click()  # "Product offers" (tags are listed by name)
    browser.find_element(By.CSS_SELECTOR, "button[name=save]").click()
    done = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".done"),
        message="the saved page",
    )
    assert "saved" in done[0].text, browser.page_source[:2000]
    browser.save_screenshot(str(tmp_path / "preferences-saved.png"))
    assert list(contact.tags.values_list("name", flat=True)) == ["Monthly news"]
    contact.refresh_from_db()
    assert contact.status == "active"
