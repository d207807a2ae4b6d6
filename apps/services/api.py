"""``/api/services/`` and ``/api/pools/``: operators only (others get 403).

Writes go through :mod:`apps.services.services` (audited with the caller as author);
passwords are accepted, stored encrypted and never returned.
"""

from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api import IsOperator
from apps.services import services
from apps.services.models import Pool
from apps.services.selectors import pool_default, service_list, service_stats
from apps.services.serializers import (
    ConnectionTestSerializer,
    EmailServiceSerializer,
    PoolSerializer,
    ServiceActionResultSerializer,
    ServiceDisableSerializer,
    ServiceEnableSerializer,
    ServiceStatsSerializer,
)


class EmailServiceViewSet(viewsets.ModelViewSet):
    permission_classes = [IsOperator]
    serializer_class = EmailServiceSerializer
    filterset_fields = ["pool", "kind", "is_enabled"]

    def get_queryset(self):
        return service_list()

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        service = services.service_create(**serializer.validated_data, actor=request.user)
        return Response(self.get_serializer(service).data, status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args, **kwargs) -> Response:
        instance = self.get_object()
        serializer = self.get_serializer(
            instance, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        service = services.service_update(
            service_id=instance.pk, actor=request.user, **serializer.validated_data
        )
        service.refresh_from_db()
        return Response(self.get_serializer(service).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        services.service_delete(service_id=self.get_object().pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=ServiceStatsSerializer)
    @action(detail=True, methods=["get"])
    def stats(self, request: Request, pk: str | None = None) -> Response:
        """Live state: ready in N s, quota used/left today, success rate, counters."""
        return Response(service_stats(self.get_object()))

    @extend_schema(request=None, responses=ConnectionTestSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Connect and authenticate now: ``{"ok", "latency_ms", "error", "error_kind"}``."""
        result = services.service_test_connection(service_id=self.get_object().pk)
        return Response(result.as_dict())

    @extend_schema(request=ServiceEnableSerializer, responses=ServiceActionResultSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        return self._switch(request, ServiceEnableSerializer, services.service_enable)

    @extend_schema(request=ServiceDisableSerializer, responses=ServiceActionResultSerializer)
    @action(detail=True, methods=["post"])
    def disable(self, request: Request, pk: str | None = None) -> Response:
        return self._switch(request, ServiceDisableSerializer, services.service_disable)

    def _switch(self, request: Request, serializer_class, service_function) -> Response:
        """Enable or disable through ``service_function`` with the operator's reason."""
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        service = self.get_object()
        changed = service_function(
            service_id=service.pk, actor=request.user, reason=serializer.validated_data["reason"]
        )
        service.refresh_from_db()
        return Response({"changed": changed, **service_stats(service)})


class PoolViewSet(viewsets.ModelViewSet):
    permission_classes = [IsOperator]
    serializer_class = PoolSerializer

    def get_queryset(self):
        if not getattr(self, "swagger_fake_view", False):
            pool_default()  # the default pool is always listed
        return (
            Pool.objects.annotate(service_count=Count("services"))
            .prefetch_related("owners")
            .order_by("name")
        )

    def create(self, request: Request, *args, **kwargs) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pool = services.pool_create(**serializer.validated_data, actor=request.user)
        return Response(
            self.get_serializer(self.get_queryset().get(pk=pool.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    def update(self, request: Request, *args, **kwargs) -> Response:
        instance = self.get_object()
        serializer = self.get_serializer(
            instance, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        pool = services.pool_update(
            pool_id=instance.pk, actor=request.user, **serializer.validated_data
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=pool.pk)).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        services.pool_delete(pool_id=self.get_object().pk, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
