from __future__ import annotations

from rest_framework.routers import SimpleRouter

from apps.services import api


class _Router(SimpleRouter):
    """Trailing slash optional: ``/api/services/3/stats`` and ``.../stats/`` both work."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = _Router()
router.register("services", api.EmailServiceViewSet, basename="service")
router.register("pools", api.PoolViewSet, basename="pool")

urlpatterns = router.urls
