"""Contacts API routes, mounted under ``/api/``."""

from __future__ import annotations

from django.urls import path

from apps.contacts import api

app_name = "contacts"

urlpatterns = [
    path("contacts/", api.ContactListView.as_view(), name="contact-list"),
    path("contacts/bulk/", api.ContactBulkView.as_view(), name="contact-bulk"),
    path("contacts/import/", api.ContactImportView.as_view(), name="contact-import"),
    path("contacts/<int:pk>/", api.ContactDetailView.as_view(), name="contact-detail"),
    path("imports/", api.ImportListView.as_view(), name="import-list"),
    path("imports/<int:pk>/", api.ImportDetailView.as_view(), name="import-detail"),
    path("imports/<int:pk>/report/", api.ImportReportView.as_view(), name="import-report"),
    path("tags/", api.TagListView.as_view(), name="tag-list"),
    path("tags/<int:pk>/", api.TagDetailView.as_view(), name="tag-detail"),
    path("tags/<int:pk>/merge/", api.TagMergeView.as_view(), name="tag-merge"),
    path("tags/<int:pk>/contacts/", api.TagContactsView.as_view(), name="tag-contacts"),
]
