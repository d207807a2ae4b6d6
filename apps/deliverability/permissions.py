"""Who is an operator: a superuser or a member of the ``operators`` group."""

from __future__ import annotations

OPERATORS_GROUP = "operators"


def is_operator(user) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser:
        return True
    return user.groups.filter(name=OPERATORS_GROUP).exists()
