"""The operator's deliverability pages in a real headless Chromium."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By

from apps.contacts.models import Contact
from apps.deliverability import dkim, services
from apps.deliverability.models import DkimKey, TrackingEvent
from apps.deliverability.tests.test_admin import LoopbackDNS
from apps.dispatch.tests.helpers import queue_task
from tests.browser import admin_login

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_reads_the_suppressions_the_stats_and_the_dns_check(
    browser, live_server, staff_user, user, make_contacts, make_service, settings, tmp_path
):
    contacts = make_contacts(user, 3)
    make_service(port=2525)
    task = queue_task(user)
    services.contact_unsubscribe(contact_id=contacts[0].pk, task_id=task.pk, source="one-click")
    services.suppression_add(owner=None, domain="spamtrap.example", reason="manual")
    for contact, kind, url in [
        (contacts[1], "open", ""),
        (contacts[1], "click", "https://shop.example.org/sale"),
        (contacts[2], "click", "https://shop.example.org/sale"),
    ]:
        TrackingEvent.objects.create(task_id=task.pk, contact_id=contact.pk, kind=kind, url=url)
    key = DkimKey(domain="example.com", selector="edm1")
    key.private_key = dkim.generate_private_key()
    key.public_key = dkim.public_key_of(key.private_key)
    key.save()
    server = LoopbackDNS(
        {
            "example.com": ["v=spf1 ip4:192.0.2.0/24 -all"],
            "edm1._domainkey.example.com": [f"v=DKIM1; k=rsa; p={key.public_key}"],
        }
    )
    settings.EDM_DNS_NAMESERVER = f"127.0.0.1:{server.port}"
    try:
        admin_login(browser, live_server.url, staff_user.username, "pw-" + staff_user.username)
        browser.get(f"{live_server.url}/admin/deliverability/suppression/")
        browser.save_screenshot(str(tmp_path / "suppressions.png"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
        assert len(rows) == 2
        browser.get(f"{live_server.url}/admin/deliverability/feedbackevent/task/{task.pk}/")
        browser.save_screenshot(str(tmp_path / "stats.png"))
        assert "https://shop.example.org/sale" in browser.page_source
        browser.get(f"{live_server.url}/admin/deliverability/dkimkey/{key.pk}/dns/")
        browser.save_screenshot(str(tmp_path / "dns.png"))
        cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "tbody td:nth-child(3)")]
    finally:
        server.close()
    assert cells == ["ok", "ok", "missing"]
    assert Contact.objects.get(pk=contacts[0].pk).status == "unsubscribed"
