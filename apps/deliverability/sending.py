"""The dispatcher's hooks into deliverability, on the send path of every message.

* :func:`subtasks_skip_unsendable` — once per chunk, before its first message: the
  claimed subtasks whose contact is no longer ``active`` (unsubscribed, bounced or
  complained since the task was queued) or whose address or domain was suppressed
  meanwhile become ``skipped`` (one statement, token-fenced) and are not sent. Together
  with the check when a task is queued (``dispatch.services``) this is "never mailed
  again": a contact who unsubscribes while a task is sending is skipped from the next
  chunk on (a chunk lasts about a second).
* :func:`envelope_from` — the VERP return path ``bounces+<token>@EDM_BOUNCE_DOMAIN`` when
  a bounce domain is configured (a DSN then names the message it is about even when the
  original is not quoted), else the service's From address.
* :func:`sign_message` — the DKIM signature of the final bytes, when a key is
  configured for the service or the From domain (:mod:`apps.deliverability.dkim`).
"""

from __future__ import annotations

from django.conf import settings

from apps.core.database import PreparingCursor
from apps.deliverability import dkim, links
from apps.deliverability.selectors import suppressed_sql

_SKIP = f"""
WITH x AS (
    SELECT s.id, CASE WHEN c.status IS NOT NULL AND c.status <> 'active' THEN c.status
                      ELSE 'suppressed' END AS why
    FROM unnest(%s::bigint[], %s::int[]) AS u(id, token)
    JOIN dispatch_subtask s ON s.id = u.id AND s.attempt_token = u.token
    LEFT JOIN contacts_contact c ON c.id = s.contact_id
    WHERE (s.status = 'allocated') IS TRUE
      AND ((c.status IS NOT NULL AND c.status <> 'active')
           OR {suppressed_sql(owner="s.owner_id", email="lower(s.to_email)")})
)
UPDATE dispatch_subtask s
SET status = 'skipped', error_class = x.why, last_error = 'not sent: ' || x.why,
    lease_expires_at = NULL
FROM x
WHERE s.id = x.id AND (s.status = 'allocated') IS TRUE
RETURNING s.id
"""


def subtasks_skip_unsendable(claimed: list) -> list:
    """Skip the claimed subtasks (``allocated`` under their tokens) that may no longer be
    sent and return the others, in order. Runs on the sender thread's connection in
    autocommit: the skips are recorded at once, like failures (``engine/outcomes``)."""
    if not claimed:
        return claimed
    with PreparingCursor() as cursor:
        cursor.execute(_SKIP, [[c.id for c in claimed], [c.token for c in claimed]])
        skipped = {row[0] for row in cursor.fetchall()}
    if not skipped:
        return claimed
    return [c for c in claimed if c.id not in skipped]


def envelope_from(subtask_id: int, from_email: str) -> str:
    domain = settings.EDM_BOUNCE_DOMAIN
    if not domain:
        return from_email
    return links.return_path(subtask_id=subtask_id, domain=domain)


def sign_message(message: bytes, *, service_id: int, from_email: str) -> bytes:
    signer = dkim.signer_for(service_id=service_id, from_email=from_email)
    if signer is None:
        return message
    return signer.sign(message)
