"""``/api/system-config``: read (authenticated), change (staff), history, rollback.

Keys contain a dot (``queue.batch_size``), categories do not (``queue``), so
``/api/system-config/<name>`` serves either. Values are validated by the registry;
a bad value answers 400 naming the key and the reason, and changes nothing.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.config import selectors, services
from apps.config.registry import CATEGORIES, KEYS
from apps.config.serializers import (
    ConfigBatchResultSerializer,
    ConfigBatchSerializer,
    ConfigHistorySerializer,
    ConfigItemChangedSerializer,
    ConfigListSerializer,
    ConfigRollbackSerializer,
    ConfigUpdateSerializer,
)
from apps.core.tenancy import is_operator


class IsOperatorOrReadOnly(BasePermission):
    """Any authenticated user reads; only operators (``apps.core.tenancy``) write."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or is_operator(request.user)


class _ConfigView(APIView):
    permission_classes = [IsAuthenticated, IsOperatorOrReadOnly]


def _known_key(key: str) -> str:
    if key not in KEYS:
        raise Http404(f"unknown configuration key {key!r}")
    return key


def _change_data(change: services.Change) -> dict:
    return {"key": change.key, "old": change.old, "new": change.new}


class ConfigListView(_ConfigView):
    @extend_schema(operation_id="system_config_list", responses=ConfigListSerializer)
    def get(self, request: Request) -> Response:
        items = selectors.config_items()
        return Response(
            {
                "count": len(items),
                "next": None,
                "previous": None,
                "categories": list(CATEGORIES),
                "results": items,
            }
        )


class ConfigNameView(_ConfigView):
    """``GET`` a key or a category; ``PUT`` a key ``{"value": …, "reason": …}``."""

    @extend_schema(
        operation_id="system_config_key_or_category",
        responses={200: OpenApiTypes.OBJECT},
        description="A key (`queue.batch_size`: one item) or a category (`queue`: a list).",
    )
    def get(self, request: Request, name: str) -> Response:
        if "." in name:
            return Response(selectors.config_item(_known_key(name)))
        if name not in CATEGORIES:
            raise Http404(f"unknown configuration category {name!r}")
        items = selectors.config_items(category=name)
        return Response({"count": len(items), "next": None, "previous": None, "results": items})

    @extend_schema(request=ConfigUpdateSerializer, responses=ConfigItemChangedSerializer)
    def put(self, request: Request, name: str) -> Response:
        key = _known_key(name)
        serializer = ConfigUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        change = services.config_set(
            key=key,
            value=serializer.validated_data["value"],
            reason=serializer.validated_data["reason"],
            actor=request.user,
        )
        return Response({**selectors.config_item(key), "changed": change is not None})


class ConfigBatchView(_ConfigView):
    """``PUT {"key": value, …}`` or ``{"values": {…}, "reason": …}``: all or nothing."""

    @extend_schema(request=ConfigBatchSerializer, responses=ConfigBatchResultSerializer)
    def put(self, request: Request) -> Response:
        data = request.data
        if isinstance(data, dict) and not isinstance(data.get("values"), dict):
            # The flat shape {"key": value, …}; a "reason" there is not a key.
            flat = dict(data)
            reason = flat.pop("reason", "")
            data = {"values": flat, "reason": reason if isinstance(reason, str) else ""}
        serializer = ConfigBatchSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        changes = services.config_set_many(
            values=serializer.validated_data["values"],
            reason=serializer.validated_data["reason"] or "batch update",
            actor=request.user,
        )
        changed = {change.key for change in changes}
        return Response(
            {
                "changed": [_change_data(change) for change in changes],
                "unchanged": sorted(set(serializer.validated_data["values"]) - changed),
            }
        )


class ConfigHistoryView(_ConfigView):
    @extend_schema(responses=ConfigHistorySerializer)
    def get(self, request: Request, name: str) -> Response:
        entries = selectors.config_history(_known_key(name))
        return Response({"count": len(entries), "next": None, "previous": None, "results": entries})


class ConfigRollbackView(_ConfigView):
    """``POST {"history_id": …, "reason": …}``: back to that version (itself audited)."""

    @extend_schema(request=ConfigRollbackSerializer, responses=ConfigItemChangedSerializer)
    def post(self, request: Request, name: str) -> Response:
        key = _known_key(name)
        serializer = ConfigRollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        change = services.config_rollback(
            key=key,
            history_id=serializer.validated_data["history_id"],
            reason=serializer.validated_data["reason"],
            actor=request.user,
        )
        return Response({**selectors.config_item(key), "changed": change is not None})
