"""Who sees what in monitoring.

An *operator* sees every tenant's tasks, the services, the dispatchers and every alert,
and manages rules and channels; anyone else (a tenant) sees only alerts and figures of
its own tasks. The rule is the project's one operator rule (``apps.core.tenancy``: a
superuser, or a holder of ``core.view_all_tenants`` such as the ``operators`` group),
used by the API and the admin alike.
"""

from __future__ import annotations

from apps.core.tenancy import OPERATORS_GROUP, is_operator

__all__ = ["OPERATORS_GROUP", "is_operator"]
