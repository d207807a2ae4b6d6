"""The event types EDM records, one registry.

An event type is ``<subject>.<verb>``. Every type appended to the outbox is one of these; an
endpoint's subscription and a projection's input are checked against the same list.
"""

from __future__ import annotations

EVENT_TYPES: dict[str, str] = {
    "task.created": "a task was created",
    "task.changed": "a task's content or schedule was changed",
    "task.queued": "a task entered the queue",
    "task.started": "a task's first message was accepted by a service",
    "task.paused": "a task was paused",
    "task.resumed": "a paused task was resumed",
    "task.completed": "every recipient of a task reached a final state",
    "task.cancelled": "a task was cancelled",
    "task.deleted": "a draft task was deleted",
    "task.unknown_requeued": "a task's messages of unknown outcome were queued again",
    "subtask.sent": "a message was accepted by a service",
    "subtask.failed": "a message failed permanently",
    "subtask.dead": "a message exhausted its retries and went to the dead-letter queue",
    "subtask.unknown": "a message's outcome is unknown after a crash on the wire",
    "subtask.opened": "a recipient opened a message (tracking pixel)",
    "subtask.clicked": "a recipient clicked a tracked link of a message",
    "deadletter.reprocessed": "dead letters were queued again",
    "contact.created": "a contact was created",
    "contact.changed": "a contact was changed",
    "contact.deleted": "a contact was deleted",
    "contact.unsubscribed": "a contact unsubscribed",
    "contact.bounced": "a contact's address bounced",
    "contact.complained": "a contact reported a message as spam",
    "tag.created": "a tag was created",
    "tag.changed": "a tag was renamed or changed",
    "tag.deleted": "a tag was deleted",
    "tag.members_changed": "contacts were added to or removed from a tag",
    "import.completed": "a contact import finished",
    "service.created": "an e-mail service was created",
    "service.changed": "an e-mail service was changed",
    "service.deleted": "an e-mail service was deleted",
    "service.disabled": "an e-mail service was disabled",
    "service.enabled": "an e-mail service was enabled",
    "pool.changed": "a service pool was created, changed or deleted",
    "config.changed": "a configuration key was changed",
    "alert.fired": "an alert fired",
    "alert.escalated": "an open alert's level rose",
    "alert.acknowledged": "an alert was acknowledged",
    "alert.resolved": "an alert resolved",
    "alert_rule.changed": "an alert rule was created, changed or deleted",
    "alert_channel.changed": "a notification channel was created, changed or deleted",
    "suppression.changed": "a suppression entry was added or removed",
    "webhook.changed": "a webhook endpoint was created, changed or deleted",
    "webhook.disabled": "a webhook endpoint kept failing and was disabled",
    "projection.reset": "a reporting projection was reset to be rebuilt",
    "projection.paused": "a reporting projection was paused",
    "projection.resumed": "a paused reporting projection was resumed",
}


def check_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    return event_type
