"""Task templates: validated when a task is saved, compiled once per task, rendered per contact.

Subject and bodies use the Django template language with ``contact`` in the context
(``{{ contact.first_name }}``, ``{{ contact.attributes.city }}``…) and, for a bulk message,
``{{ unsubscribe_url }}`` and ``{{ preferences_url }}``. The subject and the text body are
rendered without HTML autoescaping; the HTML body is autoescaped.

A bulk message (compiled with :class:`Links`) always carries an unsubscribe link: a body
that does not use ``{{ unsubscribe_url }}`` gets a short footer with it. With tracking on,
the HTML's links go through signed click redirects and an open pixel is added
(:mod:`apps.deliverability.links`); the List-Unsubscribe headers come from
:meth:`CompiledTask.headers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.template import Context, Engine, TemplateSyntaxError
from django.template.base import Template, TextNode, Variable, VariableNode
from django.template.defaulttags import DebugNode, URLNode
from django.template.loader_tags import ExtendsNode, IncludeNode
from django.utils.html import escape

from apps.deliverability import links as deliverability_links

_FIELDS = ("subject", "body_text", "body_html")
# Variables a bulk message's templates may use besides ``contact``.
_LINK_VARIABLES = ("unsubscribe_url", "preferences_url")
_TEXT_FOOTER = "\n\nUnsubscribe: {{ unsubscribe_url }}\n"
# ASCII and short lines: the footer must not turn a 7bit HTML body into quoted-printable.
_HTML_FOOTER = (
    '\n<p style="margin-top:24px;font-size:12px;color:#666666">\n'
    "You receive this because you are on our list.\n"
    '<a href="{{ unsubscribe_url }}" style="color:#666666">Unsubscribe</a> |\n'
    '<a href="{{ preferences_url }}" style="color:#666666">Preferences</a></p>\n'
)


def _engine(*, autoescape: bool, debug: bool) -> Engine:
    # Standalone engines: no loaders, no file access. ``debug`` keeps the line of a syntax
    # error (validation); rendering uses a non-debug engine, which is faster per node.
    return Engine(debug=debug, autoescape=autoescape, loaders=[])


_ENGINES: dict[tuple[bool, bool], Engine] = {}


def _compile(field: str, source: str, *, debug: bool = True) -> Template:
    key = (field == "body_html", debug)
    engine = _ENGINES.get(key)
    if engine is None:
        engine = _ENGINES[key] = _engine(autoescape=key[0], debug=debug)
    try:
        return engine.from_string(source)
    except TemplateSyntaxError as exc:
        line = None
        debug = getattr(exc, "template_debug", None)
        if debug:
            line = debug.get("line")
        where = f" (line {line})" if line else ""
        raise ValidationError({field: [f"template error{where}: {exc}"]}) from None


# Longest sources (characters for the subject, UTF-8 bytes for the bodies).
MAX_SUBJECT_LENGTH = 1000
MAX_BODY_BYTES = 2 * 1024 * 1024
# Tags that parse but cannot render at send time: the engine has no template loaders
# (include, extends), a message has no request to resolve URLs against (url), and
# ``debug`` would print the rendering context into a customer's mail.
_FORBIDDEN_TAGS = {
    IncludeNode: "include",
    ExtendsNode: "extends",
    URLNode: "url",
    DebugNode: "debug",
}
# What a template is test-rendered with at validation; a send renders a real contact.
_SAMPLE_CONTEXT = {
    "contact": {
        "id": 1,
        "email": "someone@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "status": "active",
        "attributes": {},
    },
    "unsubscribe_url": "https://example.com/u/sample",
    "preferences_url": "https://example.com/p/sample",
}


def _check_sizes(subject: str, body_text: str, body_html: str) -> None:
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise ValidationError({"subject": [f"at most {MAX_SUBJECT_LENGTH} characters"]})
    for field, source in (("body_text", body_text), ("body_html", body_html)):
        if len(source) > MAX_BODY_BYTES // 4 and len(source.encode()) > MAX_BODY_BYTES:
            raise ValidationError({field: [f"at most {MAX_BODY_BYTES} bytes (2 MB)"]})


def _check_renderable(field: str, template: Template) -> None:
    """Refuse what parses but fails (or leaks) when rendered: the forbidden tags, and
    anything that raises when rendered for a sample contact."""
    for node_type, name in _FORBIDDEN_TAGS.items():
        nodes = template.nodelist.get_nodes_by_type(node_type)
        if nodes:
            token = getattr(nodes[0], "token", None)
            where = f" (line {token.lineno})" if token is not None else ""
            raise ValidationError(
                {field: [f"template error{where}: {{% {name} %}} cannot be used in a message"]}
            )
    try:
        template.render(Context(_SAMPLE_CONTEXT, autoescape=field == "body_html"))
    except Exception as exc:  # noqa: BLE001 - any failure now would fail every recipient
        raise ValidationError(
            {field: [f"template error: cannot be rendered ({exc.__class__.__name__}: {exc})"]}
        ) from None


def task_validate_templates(*, subject: str, body_text: str = "", body_html: str = "") -> None:
    """Raise ``ValidationError`` ``{field: ["template error (line N): …"]}`` for the first
    template that does not parse or cannot render at send time; also when the subject is
    empty or longer than ``MAX_SUBJECT_LENGTH``, both bodies are empty, or a body is
    longer than ``MAX_BODY_BYTES``."""
    if not subject or not subject.strip():
        raise ValidationError({"subject": ["the subject may not be empty"]})
    if "\n" in subject.strip() or "\r" in subject.strip():
        raise ValidationError({"subject": ["the subject must be a single line"]})
    if not (body_text or "").strip() and not (body_html or "").strip():
        raise ValidationError({"body_text": ["a text or an HTML body is required"]})
    _check_sizes(subject, body_text or "", body_html or "")
    for field, source in zip(_FIELDS, (subject, body_text, body_html), strict=True):
        _check_renderable(field, _compile(field, source or ""))


# A template made only of text and plain ``{{ contact.a.b }}`` / ``{{ unsubscribe_url }}``
# variables, as a sequence of literal strings and lookup paths from the context root.
_Plan = tuple[str | tuple[str, ...], ...]


def _plan(template: Template) -> _Plan | None:
    """The template as text and lookup paths, or None when it uses anything else (tags,
    filters, literals, translation, another root than ``contact`` or a link variable):
    those are rendered by Django only."""
    parts: list[str | tuple[str, ...]] = []
    for node in template.nodelist:
        if type(node) is TextNode:
            parts.append(node.s)
            continue
        if type(node) is not VariableNode:
            return None
        expression = node.filter_expression
        var = expression.var
        if (
            expression.filters
            or type(var) is not Variable
            or var.literal is not None
            or var.translate
            or var.message_context
            or not var.lookups
            or not (
                (var.lookups[0] == "contact" and len(var.lookups) >= 2)
                or (var.lookups[0] in _LINK_VARIABLES and len(var.lookups) == 1)
            )
        ):
            return None
        parts.append(tuple(var.lookups))
    return tuple(parts)


def _render_plan(plan: _Plan, context: dict[str, Any], *, autoescape: bool) -> str | None:
    """What Django renders for ``plan`` when every variable is a key path through plain
    dicts to a plain ``str`` (then Django's lookup is the dict item, and its output the
    string, HTML-escaped under autoescape); None otherwise, so Django renders it (missing
    keys, numbers, lists, dates… keep Django's exact behaviour)."""
    out: list[str] = []
    for part in plan:
        if type(part) is str:
            out.append(part)
            continue
        value: Any = context
        for key in part:
            if type(value) is not dict or key not in value:
                return None
            value = value[key]
        if type(value) is not str:
            return None
        out.append(escape(value) if autoescape else value)
    return "".join(out)


@dataclass(frozen=True)
class Links:
    """What makes a task's messages bulk mail: who they are for (the task), whether the
    HTML is tracked, and the domain of the mailto unsubscribe address."""

    task_id: int
    tracking: bool = True
    mail_domain: str = "edm.localhost"
    base_url: str = ""
    feedback_id: str = ""


def compile_task(task_id: int) -> CompiledTask:
    """The compiled templates of a task as its bulk messages are sent: links, footer,
    tracking as the task says (``Task.tracking``), the mailto unsubscribe address at the
    bounce domain (or the task's Message-ID domain)."""
    from apps.dispatch.models import Task

    row = (
        Task.objects.filter(pk=task_id)
        .values(
            "subject",
            "body_text",
            "body_html",
            "from_name",
            "tracking",
            "message_id_domain",
            "owner_id",
        )
        .get()
    )
    links = Links(
        task_id=task_id,
        tracking=row.pop("tracking"),
        mail_domain=deliverability_links.bounce_domain(
            row.pop("message_id_domain") or "edm.localhost"
        ),
        feedback_id=f"{task_id}:{row.pop('owner_id')}:edm",
    )
    return CompiledTask.compile(**row, links=links)


def _with_footer(source: str, footer: str, *, html: bool) -> str:
    """``source`` with ``footer`` added unless it already uses ``unsubscribe_url``."""
    if not source or "unsubscribe_url" in source:
        return source
    if html:
        lower = source.lower()
        end = lower.rfind("</body")
        if end >= 0:
            return source[:end] + footer + source[end:]
    return source + footer


@dataclass(frozen=True)
class CompiledTask:
    """A task's templates compiled once; :meth:`render` is the per-contact step."""

    subject: Template
    text: Template
    html: Template | None
    from_name: str
    # Fast paths of the three templates (see _plan); None: always rendered by Django.
    subject_plan: _Plan | None = None
    text_plan: _Plan | None = None
    html_plan: _Plan | None = None
    links: Links | None = None

    @classmethod
    def compile(
        cls,
        *,
        subject: str,
        body_text: str,
        body_html: str,
        from_name: str = "",
        links: Links | None = None,
    ) -> CompiledTask:
        """Compile the templates; with ``links`` (a bulk message) the bodies get the
        unsubscribe footer when they do not use ``{{ unsubscribe_url }}``."""
        if links is not None:
            if (body_text or "").strip() or not body_html:
                body_text = _with_footer(body_text or "", _TEXT_FOOTER, html=False)
            body_html = _with_footer(body_html, _HTML_FOOTER, html=True)
            if not links.base_url:
                links = Links(**{**links.__dict__, "base_url": deliverability_links.public_url()})
        subject_template = _compile("subject", subject, debug=False)
        text_template = _compile("body_text", body_text or "", debug=False)
        html_template = _compile("body_html", body_html, debug=False) if body_html else None
        return cls(
            subject=subject_template,
            text=text_template,
            html=html_template,
            from_name=from_name,
            subject_plan=_plan(subject_template),
            text_plan=_plan(text_template),
            html_plan=_plan(html_template) if html_template is not None else None,
            links=links,
        )

    def _context(self, contact: dict[str, Any]) -> dict[str, Any]:
        links = self.links
        if links is None:
            return {"contact": contact}
        contact_id = contact.get("id") or 0
        unsubscribe = deliverability_links.unsubscribe_url(
            contact_id=contact_id, task_id=links.task_id, base=links.base_url
        )
        return {
            "contact": contact,
            "unsubscribe_url": unsubscribe,
            "preferences_url": unsubscribe + "/preferences",
        }

    def render(self, contact: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) for one contact; a rendered subject is one line.

        Templates of text and plain ``{{ contact.… }}`` variables whose values are
        strings are filled in directly (the same output as Django's, about five times
        cheaper: rendering is a large part of the per-message CPU); anything else goes
        through Django's renderer. With tracking on, the HTML's links are rewritten to
        signed click redirects and the open pixel is added."""
        values = self._context(contact)
        subject = text = None
        if self.subject_plan is not None:
            subject = _render_plan(self.subject_plan, values, autoescape=False)
        if self.text_plan is not None:
            text = _render_plan(self.text_plan, values, autoescape=False)
        if subject is None or text is None:
            context = Context(values, autoescape=False)
            if subject is None:
                subject = self.subject.render(context)
            if text is None:
                text = self.text.render(context)
        subject = " ".join(subject.split())
        html = ""
        if self.html is not None:
            rendered = None
            if self.html_plan is not None:
                rendered = _render_plan(self.html_plan, values, autoescape=True)
            if rendered is None:
                rendered = self.html.render(Context(values, autoescape=True))
            html = rendered
            links = self.links
            if links is not None and links.tracking and contact.get("id"):
                html = deliverability_links.track_html(
                    html, contact_id=contact["id"], task_id=links.task_id, base=links.base_url
                )
        return subject, text, html

    def headers(self, contact: dict[str, Any]) -> dict[str, str] | None:
        """The headers of a bulk message to ``contact`` (List-Unsubscribe with an https
        link and a mailto, List-Unsubscribe-Post for RFC 8058 one-click, Feedback-ID);
        None for a message compiled without :class:`Links`."""
        links = self.links
        if links is None:
            return None
        headers = deliverability_links.list_unsubscribe_headers(
            contact_id=contact.get("id") or 0,
            task_id=links.task_id,
            mail_domain=links.mail_domain,
            base=links.base_url,
        )
        if links.feedback_id:
            headers["Feedback-ID"] = links.feedback_id
        return headers
