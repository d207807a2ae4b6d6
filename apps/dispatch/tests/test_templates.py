"""The direct fill-in of plain templates renders exactly what Django renders."""

from __future__ import annotations

import dataclasses

import pytest

from apps.dispatch.templates import CompiledTask

CONTACTS = [
    {"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com", "attributes": {}},
    {
        "first_name": "<b>Bo & \"Co\"</b> 'x'",
        "last_name": "",
        "email": "bo@example.com",
        "attributes": {"city": "Zürich <&>", "n": 3, "nested": {"k": "v<"}, "none": None},
    },
    {"first_name": "", "last_name": "", "email": "", "attributes": {"city": ["a", "b"]}},
    {"first_name": "Ðànîél", "last_name": "x", "email": "d@example.com", "attributes": "bad"},
]

TEMPLATES = [
    # plain: filled in directly when every value is a string
    (
        "Hi {{ contact.first_name }}!",
        "{{ contact.attributes.city }} / {{ contact.email }}",
        "<p>{{ contact.first_name }} {{ contact.attributes.city }}</p>",
    ),
    # missing keys, numbers, None, lists, nested dicts, a non-dict: Django decides
    (
        "{{ contact.attributes.n }}{{ contact.attributes.none }}",
        "{{ contact.attributes.missing }}",
        "{{ contact.attributes.nested.k }}{{ contact.attributes.city.0 }}{{ contact.items }}",
    ),
    # tags, filters, literals, other roots: never filled in directly
    (
        "{{ contact.first_name|upper }}",
        "{% if contact.first_name %}y{% endif %}{{ 'lit' }}",
        "{{ other }}{{ contact }}{{ contact.first_name|safe }}",
    ),
    ("no variables at all", "", ""),
]


@pytest.mark.parametrize("subject,text,html", TEMPLATES)
def test_direct_fill_in_matches_django(subject, text, html):
    compiled = CompiledTask.compile(subject=subject, body_text=text, body_html=html)
    django_only = dataclasses.replace(compiled, subject_plan=None, text_plan=None, html_plan=None)
    for contact in CONTACTS:
        assert compiled.render(contact) == django_only.render(contact), contact


def test_plain_templates_take_the_direct_path_and_others_do_not():
    plain = CompiledTask.compile(
        subject="Hi {{ contact.first_name }}",
        body_text="{{ contact.attributes.city }}",
        body_html="<i>{{ contact.email }}</i>",
    )
    assert plain.subject_plan == ("Hi ", ("contact", "first_name"))
    assert plain.text_plan == (("contact", "attributes", "city"),)
    assert plain.html_plan == ("<i>", ("contact", "email"), "</i>")
    assert plain.render({"first_name": "A", "email": "<e>", "attributes": {"city": "C"}}) == (
        "Hi A",
        "C",
        "<i>&lt;e&gt;</i>",
    )
    other = CompiledTask.compile(
        subject="{{ contact.first_name|lower }}",
        body_text="{% if contact.email %}x{% endif %}",
        body_html="{{ contact }}",
    )
    assert (other.subject_plan, other.text_plan, other.html_plan) == (None, None, None)
