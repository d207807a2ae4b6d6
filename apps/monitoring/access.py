"""Who sees what in monitoring.

An *operator* sees every tenant's tasks, the services, the dispatchers and every alert,
and manages rules and channels; anyone else (a tenant) sees only alerts and figures of
its own tasks. The rule, one function used by the API and the admin alike: a superuser,
or a member of the ``operators`` group.
"""

from __future__ import annotations

OPERATORS_GROUP = "operators"


def is_operator(user) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    cached = getattr(user, "_edm_is_operator", None)
    if cached is None:
        cached = user.groups.filter(name=OPERATORS_GROUP).exists()
        user._edm_is_operator = cached
    return cached
