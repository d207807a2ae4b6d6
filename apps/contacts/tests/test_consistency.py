from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from apps.contacts.models import ContactTag, Tag
from apps.contacts.services import contacts_bulk_upsert

pytestmark = pytest.mark.django_db


def check(*args: str) -> str:
    out = io.StringIO()
    call_command("check_tag_consistency", *args, stdout=out)
    return out.getvalue()


def test_a_consistent_database_passes(user):
    contacts_bulk_upsert(owner=user, rows=[{"email": "a@example.com"}], tag_names=["t"])
    assert "OK" in check()


def test_drift_and_orphans_are_reported_then_repaired(user, other_user):
    ids = [
        r["id"]
        for r in contacts_bulk_upsert(
            owner=user, rows=[{"email": f"a{i}@example.com"} for i in range(3)], tag_names=["t"]
        )
    ]
    tag = Tag.objects.get(name="t")
    theirs = contacts_bulk_upsert(owner=other_user, rows=[{"email": "x@example.com"}])[0]["id"]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE contacts_tag SET contact_count = 7 WHERE id = %s", [tag.pk])
        cursor.execute(
            "INSERT INTO contacts_contacttag (tag_id, contact_id) VALUES (%s, 999999), (%s, %s)",
            [tag.pk, tag.pk, theirs],
        )
    with pytest.raises(CommandError, match="--repair"):
        check()
    output = check("--repair")
    assert "contact_count 7, real 5" in output and "repaired" in output
    assert "1 membership(s) of a missing tag or contact" in output
    assert "1 membership(s) joining two owners' rows" in output
    tag.refresh_from_db()
    assert tag.contact_count == 3
    assert set(ContactTag.objects.values_list("contact_id", flat=True)) == set(ids)
    assert "OK" in check("--owner", "alice")
