"""Public pages and endpoints reached from a message: no login, signed tokens.

* ``/u/<token>`` — GET: a page that asks to confirm with a button (link scanners that
  fetch every URL of a message must not unsubscribe anyone); POST: RFC 8058 one-click
  (the body ``List-Unsubscribe=One-Click``, no CSRF token, no cookies, no redirect), also
  what the page's button sends. Answers 200 with the same page every time: idempotent.
* ``/u/<token>/preferences`` — leave some tags, or everything.
* ``/t/o/<token>.gif`` — the open pixel (a 43-byte GIF, never cached).
* ``/t/c/<token>?u=<url>`` — a click: a 302 to ``url`` only when the token was signed
  for exactly that URL, i.e. it was in that message (no open redirect).

A forged or altered token answers 404 and changes nothing; a malformed one-click body 400.
"""

from __future__ import annotations

import base64

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from apps.contacts.models import Contact, Tag
from apps.deliverability import services, tokens

_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_ONE_CLICK = "One-Click"


def _contact_for(token: str) -> tuple[Contact, int] | None:
    ids = tokens.read(tokens.UNSUBSCRIBE, token, count=2)
    if ids is None:
        return None
    contact_id, task_id = ids
    contact = Contact.objects.filter(pk=contact_id).first()
    if contact is None:
        return None
    return contact, task_id


def _invalid(request: HttpRequest) -> HttpResponse:
    response = render(request, "deliverability/invalid.html", status=404)
    response["Cache-Control"] = "no-store"
    return response


def _masked(email: str) -> str:
    """``j***@example.com``: enough for a person to recognise their address, not enough
    for someone holding a forwarded message to learn it."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _page(request, template: str, contact: Contact, token: str, **extra) -> HttpResponse:
    context = {
        "email": _masked(contact.email),
        "token": token,
        "unsubscribed": contact.status != Contact.Status.ACTIVE,
        **extra,
    }
    response = render(request, template, context)
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    found = _contact_for(token)
    if found is None:
        return _invalid(request)
    contact, task_id = found
    if request.method == "GET":
        return _page(request, "deliverability/unsubscribe.html", contact, token)
    if request.POST.get("List-Unsubscribe") != _ONE_CLICK:
        return HttpResponse(
            "expected the form body List-Unsubscribe=One-Click (RFC 8058)",
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    source = "page" if request.POST.get("from") == "page" else "one-click"
    services.contact_unsubscribe(contact_id=contact.pk, task_id=task_id, source=source)
    contact.refresh_from_db(fields=["status"])
    return _page(request, "deliverability/unsubscribe.html", contact, token, done=True)


@require_http_methods(["GET", "POST"])
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    """The contact's tags with a checkbox each; unticking leaves the tag, the second
    button leaves everything. Tag names are shown to the contact as they are."""
    found = _contact_for(token)
    if found is None:
        return _invalid(request)
    contact, task_id = found
    saved = False
    if request.method == "POST":
        if "everything" in request.POST:
            services.contact_unsubscribe(
                contact_id=contact.pk, task_id=task_id, source="preferences"
            )
        else:
            current = set(contact.tags.values_list("pk", flat=True))
            keep = set()
            for value in request.POST.getlist("tag"):
                try:
                    keep.add(int(value))
                except ValueError:
                    return HttpResponse("bad tag id", status=400)
            services.contact_leave_tags(contact_id=contact.pk, tag_ids=sorted(current - keep))
        saved = True
        contact.refresh_from_db(fields=["status"])
    tags = Tag.objects.filter(memberships__contact=contact).order_by("name")
    return _page(request, "deliverability/preferences.html", contact, token, tags=tags, saved=saved)


@never_cache
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    ids = tokens.read(tokens.OPEN, token, count=2)
    if ids is not None:
        task_id, contact_id = ids
        services.tracking_record(
            kind="open",
            task_id=task_id,
            contact_id=contact_id,
            user_agent=request.headers.get("User-Agent", ""),
            ip=request.META.get("REMOTE_ADDR", ""),
        )
    # The image either way: a mail client shows no broken image for an old link.
    return HttpResponse(_PIXEL, content_type="image/gif")


@never_cache
def click(request: HttpRequest, token: str) -> HttpResponse:
    url = request.GET.get("u", "")
    ids = tokens.read(tokens.CLICK, token, count=2, extra=url) if url else None
    if ids is None or not url.lower().startswith(("http://", "https://")):
        return _invalid(request)
    task_id, contact_id = ids
    services.tracking_record(
        kind="click",
        task_id=task_id,
        contact_id=contact_id,
        url=url,
        user_agent=request.headers.get("User-Agent", ""),
        ip=request.META.get("REMOTE_ADDR", ""),
    )
    return HttpResponseRedirect(url)
