"""Fixtures of the dispatch tests: pools, services pointing at real SMTP sinks, contacts."""

from __future__ import annotations

import pytest

from apps.config.models import SystemConfig
from apps.config.registry import KEYS
from apps.config.selectors import config_cache_clear
from apps.contacts.models import Contact, ContactTag, Tag
from apps.services.models import EmailService, Pool


@pytest.fixture(autouse=True)
def _progress_counters_exact(request):
    """After every test that used the database: each task's progress counters (the rows
    the triggers append) equal a count of its subtasks — no write of any test escaped
    them. The database fixture is set up first, so it is still there at this check."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    if marker is None and "db" not in names and "transactional_db" not in names:
        yield
        return
    transactional = "transactional_db" in names or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    yield
    from apps.dispatch import progress

    assert progress.mismatches() == [], "progress counters differ from the subtasks"


@pytest.fixture
def pool(db):
    return Pool.objects.get_or_create(name=Pool.DEFAULT_NAME)[0]


@pytest.fixture
def make_service(pool):
    counter = iter(range(1, 10**6))

    def make(
        *,
        port: int,
        name: str | None = None,
        sending_rate: float = 0.0,
        daily_quota: int = 0,
        target_pool=None,
        **extra,
    ) -> EmailService:
        number = next(counter)
        return EmailService.objects.create(
            pool=target_pool or pool,
            name=name or f"service-{number}",
            kind="smtp",
            host="127.0.0.1",
            port=port,
            from_email=f"sender{number}@example.com",
            sending_rate=sending_rate,
            daily_quota=daily_quota,
            **extra,
        )

    return make


@pytest.fixture
def make_contacts():
    def make(
        owner, count: int, *, tag: str | None = "list", prefix: str = "c", status: str = "active"
    ) -> list[Contact]:
        contacts = Contact.objects.bulk_create(
            Contact(
                owner=owner,
                email=f"{prefix}{i}@{owner.username}.test",
                first_name=f"Name{i}",
                attributes={"city": f"City{i}"},
                status=status,
            )
            for i in range(count)
        )
        if tag:
            tag_row, _ = Tag.objects.get_or_create(owner=owner, name=tag)
            ContactTag.objects.bulk_create(ContactTag(tag=tag_row, contact=c) for c in contacts)
        return contacts

    return make


@pytest.fixture
def set_config(db):
    def set_(**values):
        for name, value in values.items():
            key = name.replace("__", ".")
            assert key in KEYS, key
            SystemConfig.objects.update_or_create(
                key=key, defaults={"value": value, "category": KEYS[key].category}
            )
        # This process sees the new values at once, not after the next version check.
        config_cache_clear()

    return set_
