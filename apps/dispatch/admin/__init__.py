"""The dispatch admin: composing and watching tasks (``tasks``), their subtasks, dead
letters and test sends (``records``). Every page is scoped to its tenant
(``apps.core.admin.TenantScopedAdmin``); every change goes through a service."""

from __future__ import annotations

from apps.dispatch.admin.common import CountFreeAdminMixin, CountFreePaginator, progress_bar
from apps.dispatch.admin.records import DeadLetterAdmin, SubTaskAdmin, TestSendAdmin
from apps.dispatch.admin.tasks import TaskAdmin

__all__ = [
    "CountFreeAdminMixin",
    "CountFreePaginator",
    "DeadLetterAdmin",
    "SubTaskAdmin",
    "TaskAdmin",
    "TestSendAdmin",
    "progress_bar",
]
