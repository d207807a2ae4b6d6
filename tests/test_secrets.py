"""No configured secret ever appears in a log line, an API response or a stored column.

A full run: services created, listed, changed and tested through the API, a task queued
and sent by a real ``manage.py dispatch`` subprocess through a server that requires AUTH
(one service with the right password, one with a wrong one), every log line of both
processes captured at DEBUG.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from django.db import connection

from apps.contacts.models import Contact, ContactTag, Tag
from apps.core.database import child_env
from apps.dispatch.models import SubTask
from apps.dispatch.tests.helpers import ROOT, queue_task
from apps.services.models import Pool
from apps.services.tests.conftest import SMTP_PASSWORD, SMTP_USER, smtp_auth_server  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WRONG_PASSWORD = "wr0ng-Pa55-ZQX"
CHANGED_PASSWORD = "ch4nged-Pa55-KJH"
SECRETS = (SMTP_PASSWORD, WRONG_PASSWORD, CHANGED_PASSWORD)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password appears in {where}"


def test_no_password_in_logs_responses_or_columns_of_a_full_run(
    staff_api,
    user,
    smtp_auth_server,  # noqa: F811 - the fixture imported above
    caplog,
):
    caplog.set_level(logging.DEBUG)
    Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)
    bodies = []

    def service(name: str, password: str) -> dict:
        response = staff_api.post(
            "/api/services/",
            {
                "name": name,
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": smtp_auth_server.port,
                "username": SMTP_USER,
                "password": password,
                "from_email": f"{name}@example.com",
                "daily_quota": 0,
                "sending_rate": 0,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        bodies.append(response.content.decode())
        return response.json()

    good = service("good", SMTP_PASSWORD)
    bad = service("bad", "placeholder")
    changed = staff_api.patch(
        f"/api/services/{bad['id']}/", {"password": CHANGED_PASSWORD}, format="json"
    )
    bodies.append(changed.content.decode())
    staff_api.patch(f"/api/services/{bad['id']}/", {"password": WRONG_PASSWORD}, format="json")
    tests = {
        pk: staff_api.post(f"/api/services/{pk}/test").json() for pk in (good["id"], bad["id"])
    }
    assert (tests[good["id"]]["ok"], tests[bad["id"]]["ok"]) == (True, False)
    bodies.append(str(tests))
    for pk in (good["id"], bad["id"]):
        bodies.append(staff_api.get(f"/api/services/{pk}/").content.decode())
    bodies.append(staff_api.get("/api/services/").content.decode())
    bodies.append(staff_api.get("/api/system-config").content.decode())

    tag = Tag.objects.create(owner=user, name="list")
    contacts = Contact.objects.bulk_create(
        Contact(owner=user, email=f"r{i}@example.com", first_name=f"R{i}") for i in range(6)
    )
    ContactTag.objects.bulk_create(ContactTag(tag=tag, contact=c) for c in contacts)
    Tag.objects.filter(pk=tag.pk).update(contact_count=6)
    task = queue_task(user)

    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "dispatch", "--seconds", "6"],
        cwd=ROOT,
        env=child_env(DEBUG="1", LOG_LEVEL="DEBUG"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert SubTask.objects.filter(task=task, status="sent").count() == 6

    for index, body in enumerate(bodies):
        assert_no_secret(body, f"API response {index}")
    assert_no_secret(caplog.text, "the web/test process logs")
    assert_no_secret(out + err, "the dispatcher's logs")
    assert "edm.dispatch" in err  # the dispatcher's log lines were captured
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(s)::text FROM services_emailservice s")
        assert_no_secret(" ".join(row[0] for row in cursor.fetchall()), "the stored services")
