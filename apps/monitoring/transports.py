"""How a notification reaches a channel: one transport class per channel kind.

Every transport takes a channel and delivers one :class:`Notification` with
``notify()``, raising :class:`TransportError` on failure; ``permanent`` says whether a
retry can help (a refused URL, a 4xx, a recipient refused: no), and ``retry_after`` may
say when to try again (a busy email service).

* ``email`` — a plain-text message to the channel's addresses through an EDM email
  service (``alerts.email_service``, else the first enabled service by name), with the
  services app's sender interface, taking one send of that service like the dispatcher
  does (its ``sending_rate`` and daily quota hold). It is not a tenant's task: nothing
  is personalised, tracked or counted in a task.
* ``webhook`` — ``POST`` JSON ``{"type": "alert.<event>", "timestamp", "data"}`` signed
  with the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature``; the ``standardwebhooks`` package, the channel's ``whsec_``
  secret). ``webhook-id`` is the same on every retry, so a receiver can deduplicate.
* ``slack`` — ``POST {"text": …}`` to a Slack-compatible incoming webhook.

Both HTTP kinds go through :mod:`apps.core.outbound` (public addresses only, no
redirects, short timeouts).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import formataddr, make_msgid

from django.core.mail import EmailMessage
from standardwebhooks.webhooks import Webhook

from apps.config.selectors import config_get
from apps.core import outbound
from apps.monitoring.models import Notification, NotificationChannel
from apps.services.models import EmailService
from apps.services.selectors import service_list
from apps.services.senders import SendError, sender_for
from apps.services.services import service_take_send

HTTP_TIMEOUT = 5.0
SMTP_TIMEOUT = 10.0


class TransportError(Exception):
    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


def text_of(notification: Notification) -> tuple[str, str]:
    """(subject line, body text) of a notification, for e-mail and Slack."""
    payload = notification.payload
    if notification.event == Notification.Event.TEST:
        return (
            "[EDM] test notification",
            f"This is a test notification of the channel {payload.get('channel', '')!r}.",
        )
    alert = payload["alert"]
    verb = {
        "fired": "firing",
        "escalated": "escalated",
        "reminder": "still firing",
        "resolved": "resolved",
    }[notification.event]
    subject = f"[EDM {alert['level']}] {alert['rule']} {verb}: {alert['subject_label']}"
    lines = [
        f"{alert['rule']} is {verb}.",
        "",
        f"Subject:   {alert['subject_label']}",
        f"Condition: {alert['condition']}",
        f"Value:     {alert['value']:g}",
        f"Level:     {alert['level']}",
        f"Fired at:  {alert['fired_at']}",
    ]
    if alert.get("resolved_at"):
        lines.append(f"Resolved:  {alert['resolved_at']}")
    if alert.get("message"):
        lines += ["", alert["message"]]
    return subject, "\n".join(lines) + "\n"


class Transport:
    def __init__(self, channel: NotificationChannel) -> None:
        self.channel = channel

    def notify(self, notification: Notification) -> None:
        raise NotImplementedError


def alert_email_service() -> EmailService | None:
    """The service alert e-mails go through (see the module docstring)."""
    name = str(config_get("alerts.email_service") or "").strip()
    if name:
        return service_list().filter(name=name).first()
    return service_list().filter(is_enabled=True).order_by("name").first()


class EmailTransport(Transport):
    def notify(self, notification: Notification) -> None:
        service = alert_email_service()
        if service is None:
            raise TransportError(
                "no email service to send alerts through (set alerts.email_service)"
            )
        wait = service_take_send(service_id=service.pk)
        if wait is None:
            raise TransportError(
                f"email service {service.name!r} cannot send today (disabled or quota used up)"
            )
        if wait > 0:
            raise TransportError(f"email service {service.name!r} is busy", retry_after=wait)
        subject, body = text_of(notification)
        sender_address = formataddr((service.from_name or "EDM alerts", service.from_email))
        message = EmailMessage(
            subject=subject,
            body=body,
            from_email=sender_address,
            to=self.channel.addresses,
            headers={
                "Message-ID": make_msgid(domain=service.from_email.rpartition("@")[2] or None),
                "Auto-Submitted": "auto-generated",
                "X-EDM-Notification": str(notification.pk),
            },
        )
        sender = sender_for(service, timeout=SMTP_TIMEOUT)
        try:
            sender.open()
            sender.send(
                from_addr=service.from_email,
                to_addrs=self.channel.addresses,
                message=message.message().as_bytes(),
            )
        except SendError as exc:
            raise TransportError(
                f"{service.name}: {exc.message}",
                permanent=exc.kind == SendError.PERMANENT,
                status=exc.code,
            ) from None
        finally:
            sender.close()


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        outbound.post(
            url,
            body,
            headers={"Content-Type": "application/json", **headers},
            timeout=HTTP_TIMEOUT,
        )
    except outbound.OutboundError as exc:
        raise TransportError(exc.message, permanent=exc.permanent, status=exc.status) from None


def webhook_body(notification: Notification, *, now: datetime) -> bytes:
    return json.dumps(
        {
            "type": f"alert.{notification.event}",
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": notification.payload,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


class WebhookTransport(Transport):
    def notify(self, notification: Notification) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        body = webhook_body(notification, now=now)
        message_id = f"msg_edm_notification_{notification.pk}"
        signature = Webhook(self.channel.secret).sign(message_id, now, body.decode())
        _post(
            self.channel.target,
            body,
            {
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
            },
        )


class SlackTransport(Transport):
    def notify(self, notification: Notification) -> None:
        subject, body = text_of(notification)
        _post(self.channel.target, json.dumps({"text": f"*{subject}*\n{body}"}).encode(), {})


TRANSPORTS: dict[str, type[Transport]] = {
    NotificationChannel.Kind.EMAIL: EmailTransport,
    NotificationChannel.Kind.WEBHOOK: WebhookTransport,
    NotificationChannel.Kind.SLACK: SlackTransport,
}
