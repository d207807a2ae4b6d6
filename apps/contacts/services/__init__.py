"""Writes of contacts and tags, one module per concern. Every membership change goes
through ``memberships`` (and the lock order in ``sql``).

- ``sql``: the lock order and the SQL building blocks every writer shares;
- ``selection``: which of an owner's contacts a change applies to;
- ``tags``: tags themselves; ``memberships``: contacts in and out of tags;
- ``contacts``: single contacts and statuses; ``upserts``: bulk create-or-update;
- ``imports``: CSV import jobs; ``repair``: the consistency repair.

The names below are the app's public service API; import them from here.
"""

from __future__ import annotations

from apps.contacts.models import MAX_NAME_LENGTH
from apps.contacts.services.contacts import (
    contact_create,
    contact_delete,
    contact_suppressed_status,
    contact_update,
    contacts_delete,
    contacts_set_status,
)
from apps.contacts.services.imports import (
    contact_import_create,
    contact_import_run,
    contact_imports_fail_stale,
    contacts_import_file,
    run_import,
)
from apps.contacts.services.memberships import (
    MembershipChange,
    tag_add_contact_ids,
    tag_add_contacts,
    tag_remove_contacts,
)
from apps.contacts.services.repair import tag_consistency_repair
from apps.contacts.services.selection import ContactSelection
from apps.contacts.services.statuses import contacts_mark_status
from apps.contacts.services.tags import (
    MAX_TAG_NAME_LENGTH,
    tag_create,
    tag_delete,
    tag_merge,
    tag_update,
    tags_get_or_create,
)
from apps.contacts.services.upserts import (
    MAX_BULK_ROWS,
    BulkValidationError,
    contacts_bulk_upsert,
)

__all__ = [
    "MAX_BULK_ROWS",
    "MAX_NAME_LENGTH",
    "MAX_TAG_NAME_LENGTH",
    "BulkValidationError",
    "ContactSelection",
    "MembershipChange",
    "contact_create",
    "contact_delete",
    "contact_import_create",
    "contact_import_run",
    "contact_imports_fail_stale",
    "contact_suppressed_status",
    "contact_update",
    "contacts_bulk_upsert",
    "contacts_delete",
    "contacts_import_file",
    "contacts_mark_status",
    "contacts_set_status",
    "run_import",
    "tag_add_contact_ids",
    "tag_add_contacts",
    "tag_consistency_repair",
    "tag_create",
    "tag_delete",
    "tag_merge",
    "tag_remove_contacts",
    "tag_update",
    "tags_get_or_create",
]
