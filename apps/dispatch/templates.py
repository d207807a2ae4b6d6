"""Task templates: validated when a task is saved, compiled once per task, rendered per contact.

Subject and bodies use the Django template language with ``contact`` in the context
(``{{ contact.first_name }}``, ``{{ contact.attributes.city }}``…). The subject and the text
body are rendered without HTML autoescaping; the HTML body is autoescaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.template import Context, Engine, TemplateSyntaxError
from django.template.base import Template

_FIELDS = ("subject", "body_text", "body_html")


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


def task_validate_templates(*, subject: str, body_text: str = "", body_html: str = "") -> None:
    """Raise ``ValidationError`` ``{field: ["template error (line N): …"]}`` for the first
    template that does not parse; also when the subject is empty or both bodies are."""
    if not subject or not subject.strip():
        raise ValidationError({"subject": ["the subject may not be empty"]})
    if "\n" in subject.strip() or "\r" in subject.strip():
        raise ValidationError({"subject": ["the subject must be a single line"]})
    if not (body_text or "").strip() and not (body_html or "").strip():
        raise ValidationError({"body_text": ["a text or an HTML body is required"]})
    for field, source in zip(_FIELDS, (subject, body_text, body_html), strict=True):
        _compile(field, source or "")


@dataclass(frozen=True)
class CompiledTask:
    """A task's templates compiled once; :meth:`render` is the per-contact step."""

    subject: Template
    text: Template
    html: Template | None
    from_name: str

    @classmethod
    def compile(cls, *, subject: str, body_text: str, body_html: str, from_name: str = "") -> (
        CompiledTask
    ):
        return cls(
            subject=_compile("subject", subject, debug=False),
            text=_compile("body_text", body_text or "", debug=False),
            html=_compile("body_html", body_html, debug=False) if body_html else None,
            from_name=from_name,
        )

    def render(self, contact: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, text, html) for one contact; a rendered subject is one line."""
        context = Context({"contact": contact}, autoescape=False)
        subject = " ".join(self.subject.render(context).split())
        text = self.text.render(context)
        html = ""
        if self.html is not None:
            html = self.html.render(Context({"contact": contact}, autoescape=True))
        return subject, text, html
