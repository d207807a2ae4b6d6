"""The links and addresses a message carries: unsubscribe (RFC 8058 and mailto),
preferences, the open pixel, click redirects, the VERP return path.

Built per message on the dispatcher's hot path: string formatting and one HMAC each
(:mod:`apps.deliverability.tokens`), no database. The public URL and the bounce domain
come from settings (``EDM_PUBLIC_URL``, ``EDM_BOUNCE_DOMAIN``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote

from django.conf import settings

from apps.deliverability import tokens

# The href of an <a>/<area> tag, double- or single-quoted, http(s) only. Rendered HTML is
# autoescaped, so "&amp;" in a URL is unescaped before it is signed and escaped again.
_HREF = re.compile(
    r"""(<(?:a|area)\b[^>]*?\shref\s*=\s*)(["'])(https?://[^"'\s<>]+)\2""", re.IGNORECASE
)


def public_url() -> str:
    return settings.EDM_PUBLIC_URL


@lru_cache(maxsize=4096)
def _unsubscribe_token(contact_id: int, task_id: int) -> str:
    return tokens.make(tokens.UNSUBSCRIBE, contact_id, task_id)


def unsubscribe_token(*, contact_id: int, task_id: int) -> str:
    """The token of the unsubscribe link and mailto of (contact, task); the last few
    thousand are cached (a message needs it for its body and again for its headers)."""
    return _unsubscribe_token(contact_id, task_id)


def unsubscribe_url(*, contact_id: int, task_id: int, base: str | None = None) -> str:
    token = unsubscribe_token(contact_id=contact_id, task_id=task_id)
    return f"{base or public_url()}/u/{token}"


def mailto_unsubscribe(*, contact_id: int, task_id: int, domain: str) -> str:
    """``unsubscribe+<token>@domain`` (read back by ``process_inbound``)."""
    return f"unsubscribe+{unsubscribe_token(contact_id=contact_id, task_id=task_id)}@{domain}"


def bounce_domain(fallback: str) -> str:
    return settings.EDM_BOUNCE_DOMAIN or fallback


def list_unsubscribe_headers(
    *, contact_id: int, task_id: int, mail_domain: str, base: str | None = None
) -> dict[str, str]:
    """The RFC 2369 / RFC 8058 headers: an https link and a mailto, one-click POST."""
    token = unsubscribe_token(contact_id=contact_id, task_id=task_id)
    return {
        "List-Unsubscribe": (
            f"<{base or public_url()}/u/{token}>, "
            f"<mailto:unsubscribe+{token}@{mail_domain}?subject=unsubscribe>"
        ),
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def open_url(*, contact_id: int, task_id: int, base: str | None = None) -> str:
    return f"{base or public_url()}/t/o/{tokens.make(tokens.OPEN, task_id, contact_id)}.gif"


def click_url(*, contact_id: int, task_id: int, url: str, base: str | None = None) -> str:
    token = tokens.make(tokens.CLICK, task_id, contact_id, extra=url)
    return f"{base or public_url()}/t/c/{token}?u={quote(url, safe='')}"


def track_html(html: str, *, contact_id: int, task_id: int, base: str | None = None) -> str:
    """``html`` with every http(s) link sent through the click redirect (except links to
    this installation itself: unsubscribe and preferences stay direct) and the open pixel
    before ``</body>`` (or at the end)."""
    base = base or public_url()
    own = base + "/"

    def rewrite(match: re.Match[str]) -> str:
        href = match[3]
        if href.startswith(own):
            return match[0]
        url = href.replace("&amp;", "&")
        tracked = click_url(contact_id=contact_id, task_id=task_id, url=url, base=base)
        return f"{match[1]}{match[2]}{tracked.replace('&', '&amp;')}{match[2]}"

    if "href" in html:
        html = _HREF.sub(rewrite, html)
    pixel = (
        f'<img src="{open_url(contact_id=contact_id, task_id=task_id, base=base)}" '
        'width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">'
    )
    end = html.lower().rfind("</body")
    if end < 0:
        return html + pixel
    return html[:end] + pixel + html[end:]


def return_path(*, subtask_id: int, domain: str) -> str:
    """The VERP envelope sender ``bounces+<token>@domain`` of one message."""
    return f"bounces+{tokens.make(tokens.RETURN_PATH, subtask_id)}@{domain}"


_VERP = re.compile(r"(?:bounces|unsubscribe)\+([0-9a-f.]+)@", re.IGNORECASE)


def read_address_token(address: str) -> tuple[str, str] | None:
    """``("bounces"|"unsubscribe", token)`` of one of our VERP / mailto addresses."""
    match = _VERP.search(address or "")
    if match is None:
        return None
    return match[0].split("+", 1)[0].lower(), match[1]
