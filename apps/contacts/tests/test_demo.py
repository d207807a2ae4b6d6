from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.contacts.demo import seed
from apps.contacts.models import Contact, Tag

pytestmark = pytest.mark.django_db


def test_demo_seed_is_idempotent(user, staff_user):
    first = seed(operator=staff_user, user=user)
    second = seed(operator=staff_user, user=user)
    assert "20 new" in first and "0 new" in second
    assert Contact.objects.filter(owner=user).count() == 20
    assert all(c.first_name for c in Contact.objects.all())
    assert {t.name: t.contact_count for t in Tag.objects.filter(owner=user)} == {
        "customers": 20,
        "newsletter": 10,
        "vip": 5,
    }


def test_the_import_command_draws_a_progress_bar(user, write_csv):
    out, err = io.StringIO(), io.StringIO()
    path = write_csv("email\na@example.com\n")
    call_command("import_contacts", path, "--owner", "alice", stdout=out, stderr=err)
    assert "created 1" in out.getvalue()
    assert "import" in err.getvalue() and "100%" in err.getvalue()
