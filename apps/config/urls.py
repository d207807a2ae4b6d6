from __future__ import annotations

from django.urls import re_path

from apps.config import api

# No trailing slash in the documented URLs; one is accepted too.
urlpatterns = [
    re_path(r"^system-config/?$", api.ConfigListView.as_view(), name="config-list"),
    re_path(r"^system-config/batch/?$", api.ConfigBatchView.as_view(), name="config-batch"),
    re_path(
        r"^system-config/(?P<name>[\w.-]+)/history/?$",
        api.ConfigHistoryView.as_view(),
        name="config-history",
    ),
    re_path(
        r"^system-config/(?P<name>[\w.-]+)/rollback/?$",
        api.ConfigRollbackView.as_view(),
        name="config-rollback",
    ),
    re_path(
        r"^system-config/(?P<name>[\w.-]+)/?$", api.ConfigNameView.as_view(), name="config-detail"
    ),
]
