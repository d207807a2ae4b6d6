"""Bulk message building: footer, link variables, tracking rewrite (no database)."""

from __future__ import annotations

import dataclasses
import email
import email.policy

import pytest

from apps.deliverability import links
from apps.dispatch.mime import build_message
from apps.dispatch.templates import CompiledTask, Links

CONTACT = {"first_name": "Ann", "last_name": "", "email": "a@x.example", "attributes": {}, "id": 42}
LINKS = Links(task_id=7, tracking=True, mail_domain="example.com", base_url="https://e.test")


def build(compiled: CompiledTask) -> email.message.EmailMessage:
    subject, text, html = compiled.render(CONTACT)
    raw = build_message(
        from_email="n@example.com",
        to="a@x.example",
        subject=subject,
        text=text,
        html=html,
        message_id="<7.ab.1@example.com>",
        headers=compiled.headers(CONTACT),
    )
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_the_footer_keeps_an_ascii_message_7bit():
    compiled = CompiledTask.compile(
        subject="Hi",
        body_text="Hello",
        body_html="<html><body><p>Hello</p></body></html>",
        links=LINKS,
    )
    message = build(compiled)
    parts = list(message.iter_parts())
    assert [p["Content-Transfer-Encoding"] for p in parts] == ["7bit", "7bit"]
    url = links.unsubscribe_url(contact_id=42, task_id=7, base="https://e.test")
    assert url in parts[0].get_content()
    html = parts[1].get_content()
    assert html.index(url) < html.index("</body>")
    assert f'href="{url}/preferences"' in html


def test_a_template_that_places_the_link_itself_gets_no_footer():
    compiled = CompiledTask.compile(
        subject="Hi",
        body_text="Leave: {{ unsubscribe_url }}",
        body_html="",
        links=dataclasses.replace(LINKS, tracking=False),
    )
    text = build(compiled).get_content()
    assert text.count("/u/") == 1 and "Unsubscribe:" not in text


@pytest.mark.parametrize(
    "html",
    [
        '<p><a href="{{ unsubscribe_url }}">bye</a> {{ contact.first_name }}</p>',
        '<p>{% if contact.first_name %}<a href="{{ unsubscribe_url }}">x</a>{% endif %}</p>',
    ],
)
def test_the_direct_fill_in_renders_what_django_renders_with_link_variables(html):
    compiled = CompiledTask.compile(subject="s", body_text="t", body_html=html, links=LINKS)
    django_only = dataclasses.replace(compiled, subject_plan=None, text_plan=None, html_plan=None)
    assert compiled.render(CONTACT) == django_only.render(CONTACT)


def test_tracking_rewrites_http_links_only_and_adds_one_pixel():
    compiled = CompiledTask.compile(
        subject="s",
        body_text="t",
        body_html=(
            '<a href="https://shop.example/x?a=1&amp;b=2">x</a> <a href="mailto:q@x.example">m</a>'
            ' <a href="#top">t</a> <a href="{{ unsubscribe_url }}">u</a>'
        ),
        links=LINKS,
    )
    html = compiled.render(CONTACT)[2]
    assert html.count("https://e.test/t/c/") == 1
    assert 'href="mailto:q@x.example"' in html and 'href="#top"' in html
    assert html.count("/t/o/") == 1
    assert "u=https%3A%2F%2Fshop.example%2Fx%3Fa%3D1%26b%3D2" in html
