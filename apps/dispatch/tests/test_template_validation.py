"""Templates that parse but cannot render at send time are refused when a task is saved."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.dispatch.templates import MAX_BODY_BYTES, MAX_SUBJECT_LENGTH, task_validate_templates


@pytest.mark.parametrize(
    ("field", "source", "reason"),
    [
        ("body_text", 'Hi\n{% include "footer.txt" %}', r"line 2\): \{% include %\}"),
        ("body_html", '{% extends "base.html" %}<p>x</p>', r"\{% extends %\}"),
        ("body_text", "{% if contact %}{% include 'x' %}{% endif %}", r"\{% include %\}"),
        ("body_html", "<a href=\"{% url 'nowhere' %}\">x</a>", r"\{% url %\}"),
        ("body_text", "{% debug %}", r"\{% debug %\}"),
        ("subject", "Hi {% include contact.attributes.name %}", r"\{% include %\}"),
        ("body_text", "{% widthratio 1 0 'x' %}", r"cannot be rendered"),
    ],
)
def test_a_template_that_cannot_render_at_send_time_is_refused(field, source, reason):
    fields = {"subject": "Hello", "body_text": "Hi", "body_html": ""}
    fields[field] = source
    with pytest.raises(ValidationError, match=reason) as caught:
        task_validate_templates(**fields)
    assert list(caught.value.message_dict) == [field]


def test_templates_that_render_pass():
    task_validate_templates(
        subject="Hello {{ contact.first_name|default:'there' }}",
        body_text="{% for k, v in contact.attributes.items %}{{ k }}={{ v }}{% endfor %}",
        body_html="<p>{% if contact.last_name %}{{ contact.last_name }}{% endif %}</p>",
    )


def test_a_subject_or_a_body_over_its_maximum_is_refused():
    with pytest.raises(ValidationError, match="at most 1000 characters"):
        task_validate_templates(subject="x" * (MAX_SUBJECT_LENGTH + 1), body_text="Hi")
    with pytest.raises(ValidationError, match="2 MB") as caught:
        task_validate_templates(subject="Hi", body_html="é" * (MAX_BODY_BYTES // 2 + 1))
    assert list(caught.value.message_dict) == ["body_html"]


@pytest.mark.django_db
def test_the_api_refuses_an_include_naming_the_field_and_stores_nothing(api, user):
    from apps.contacts.models import Tag
    from apps.dispatch.models import Task

    tag = Tag.objects.create(owner=user, name="list")
    response = api.post(
        "/api/tasks/",
        {"name": "n", "subject": "Hi", "body_text": "{% include 'x' %}", "include_tags": [tag.pk]},
        format="json",
    )
    assert response.status_code == 400
    assert "include" in str(response.json()["errors"]["body_text"])
    assert not Task.objects.exists()
