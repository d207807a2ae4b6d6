"""Factories and helpers of the contacts tests."""

from __future__ import annotations

import factory
import pytest

from apps.contacts.models import Contact, Tag
from apps.contacts.services import ContactSelection, tag_add_contacts


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = factory.Sequence(lambda n: f"First{n}")
    last_name = "Tester"


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag

    name = factory.Sequence(lambda n: f"tag-{n}")


@pytest.fixture
def make_contacts(user):
    def make(count: int, *, owner=None, **fields) -> list[Contact]:
        return ContactFactory.create_batch(count, owner=owner or user, **fields)

    return make


@pytest.fixture
def make_tag(user):
    def make(name: str | None = None, *, owner=None, members=()) -> Tag:
        kwargs = {"owner": owner or user}
        if name:
            kwargs["name"] = name
        tag = TagFactory(**kwargs)
        if members:
            tag_add_contacts(tag=tag, selection=ContactSelection(ids=[c.pk for c in members]))
            tag.refresh_from_db()
        return tag

    return make


@pytest.fixture
def write_csv(tmp_path):
    """Write ``content`` (str or bytes) to a file and return its path."""

    def write(content: str | bytes, name: str = "contacts.csv") -> str:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    return write
