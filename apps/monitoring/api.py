"""REST API of monitoring: health, performance series, queue status, alerts, and (for
operators) alert rules and notification channels.

Thin views: validate the input, call one selector or service, serialize. Every endpoint
needs authentication; an operator (``access.is_operator``) sees everything, a tenant
only the figures and alerts of its own tasks, and rules and channels are the
operators' alone (403 for anyone else).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ApplicationError
from apps.monitoring import selectors, services
from apps.monitoring.access import is_operator
from apps.monitoring.models import Alert, AlertRule, NotificationChannel
from apps.monitoring.serializers import (
    AlertQuerySerializer,
    AlertRuleSerializer,
    AlertSerializer,
    ChannelCreatedSerializer,
    ChannelSerializer,
    ChannelUpdateSerializer,
    NotificationResultSerializer,
    SeriesQuerySerializer,
)

TAG = "monitoring"
logger = logging.getLogger("edm.monitoring")


class IsOperator(BasePermission):
    message = "Only operators manage alert rules and channels."

    def has_permission(self, request, view) -> bool:
        return is_operator(request.user)


class SystemHealthView(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Health of every component",
        description="`{status: healthy|degraded|unhealthy, components: {name: {status, …}}}`; "
        "200 unless a component is down (then 503).",
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (503, "application/json"): OpenApiTypes.OBJECT,
        },
    )
    def get(self, request):
        healthy, body = selectors.system_health()
        response = Response(body, status=200 if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
        if not healthy:
            down = [name for name, c in body["components"].items() if c["status"] == "down"]
            logger.warning("system health: unhealthy (down: %s)", ", ".join(down))
            # An expected answer of a probe, already logged: not Django's "server error".
            response._has_been_logged = True
        return response


class PerformanceMetricsView(APIView):
    @extend_schema(
        tags=[TAG],
        summary="Time series of the stored samples",
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATETIME, description="start (ISO 8601)"),
            OpenApiParameter("to", OpenApiTypes.DATETIME, description="end (ISO 8601)"),
            OpenApiParameter("step", OpenApiTypes.NUMBER, description="seconds per point"),
        ],
        description="`from`, `to` (ISO 8601) and `step` (seconds). Per point: outcomes "
        "gained (sums) and, for operators, gauges (means). At most 2,000 points.",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        query = SeriesQuerySerializer(
            data={
                key: value
                for key, value in {
                    "start": request.query_params.get("from"),
                    "end": request.query_params.get("to"),
                    "step": request.query_params.get("step"),
                }.items()
                if value not in (None, "")
            }
        )
        if not query.is_valid():
            names = {"start": "from", "end": "to"}
            errors = {names.get(k, k): v for k, v in query.errors.items()}
            field = next(iter(errors))
            return Response(
                {"detail": f"{field}: {errors[field][0]}", "code": "invalid", "errors": errors},
                status=400,
            )
        end = query.validated_data.get("end") or timezone.now()
        start = query.validated_data.get("start") or end - timedelta(hours=1)
        step = query.validated_data.get("step") or 60.0
        if start >= end:
            raise ApplicationError("from must be before to", field="from")
        if (end - start).total_seconds() / step > selectors.MAX_POINTS:
            raise ApplicationError(
                f"at most {selectors.MAX_POINTS} points: make step larger or the range shorter",
                field="step",
            )
        owner = selectors.owner_scope(request.user)
        points = selectors.performance_series(start=start, end=end, step=step, owner_id=owner)
        return Response(
            {"from": start, "to": end, "step": step, "scope": "system" if owner is None else "own",
             "points": points}
        )  # fmt: skip


class QueueStatusView(APIView):
    @extend_schema(
        tags=[TAG],
        summary="The queue now",
        description="By status, per owner, per service (operators), the waiting queue, the "
        "oldest pending message, live tasks, dispatchers and reservations (operators).",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        return Response(selectors.queue_status(owner_id=selectors.owner_scope(request.user)))


class AlertListView(generics.ListAPIView):
    serializer_class = AlertSerializer

    def get_queryset(self):
        if self.request.user.is_anonymous:
            return Alert.objects.none()
        query = AlertQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        alerts = selectors.alerts_visible(self.request.user)
        wanted = query.validated_data.get("status")
        if wanted == "open":
            alerts = alerts.exclude(status=Alert.Status.RESOLVED)
        elif wanted:
            alerts = alerts.filter(status=wanted)
        if query.validated_data.get("level"):
            alerts = alerts.filter(level=query.validated_data["level"])
        return alerts

    @extend_schema(
        tags=[TAG],
        summary="Alerts, newest first",
        parameters=[AlertQuerySerializer],
        description="`status` (firing, acknowledged, resolved, or open) and `level` filter.",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class AlertDetailView(generics.RetrieveAPIView):
    serializer_class = AlertSerializer

    def get_queryset(self):
        if self.request.user.is_anonymous:
            return Alert.objects.none()
        return selectors.alerts_visible(self.request.user)

    @extend_schema(tags=[TAG], summary="One alert")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class _AlertActionView(APIView):
    operation = staticmethod(services.alert_acknowledge)

    @extend_schema(tags=[TAG], request=None, responses=AlertSerializer)
    def post(self, request, pk: int):
        visible = selectors.alerts_visible(request.user)
        get_object_or_404(visible, pk=pk)
        alert = self.operation(alert_id=pk, actor=request.user, visible=visible)
        return Response(AlertSerializer(alert).data)


class AlertAcknowledgeView(_AlertActionView):
    """Acknowledge a firing alert: no more reminders until it escalates."""

    operation = staticmethod(services.alert_acknowledge)


class AlertResolveView(_AlertActionView):
    """Resolve an alert by hand (it fires again if its condition still holds)."""

    operation = staticmethod(services.alert_resolve)


def _rule_fields(data: dict) -> tuple[dict, list[int] | None]:
    fields = dict(data)
    channels = fields.pop("channels", None)
    return fields, None if channels is None else [c.pk for c in channels]


class AlertRuleListView(generics.ListCreateAPIView):
    serializer_class = AlertRuleSerializer
    permission_classes = [IsAuthenticated, IsOperator]
    queryset = AlertRule.objects.prefetch_related("channels")

    @extend_schema(tags=[TAG], summary="Alert rules")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(tags=[TAG], summary="Create an alert rule")
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields, channels = _rule_fields(serializer.validated_data)
        rule = services.rule_create(channels=channels, actor=request.user, **fields)
        return Response(self.get_serializer(rule).data, status=201)


class AlertRuleDetailView(generics.RetrieveUpdateDestroyAPIView):
    serializer_class = AlertRuleSerializer
    permission_classes = [IsAuthenticated, IsOperator]
    queryset = AlertRule.objects.prefetch_related("channels")

    @extend_schema(tags=[TAG], summary="One alert rule")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(tags=[TAG], summary="Change an alert rule")
    def put(self, request, *args, **kwargs):
        return self._update(request, partial=False)

    @extend_schema(tags=[TAG], summary="Change some fields of an alert rule")
    def patch(self, request, *args, **kwargs):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        rule = self.get_object()
        serializer = self.get_serializer(rule, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        fields, channels = _rule_fields(serializer.validated_data)
        rule = services.rule_update(
            rule_id=rule.pk, channels=channels, actor=request.user, **fields
        )
        return Response(self.get_serializer(rule).data)

    @extend_schema(tags=[TAG], summary="Delete an alert rule (its alerts stay in the history)")
    def delete(self, request, *args, **kwargs):
        services.rule_delete(rule_id=self.get_object().pk, actor=request.user)
        return Response(status=204)


class ChannelListView(generics.ListCreateAPIView):
    serializer_class = ChannelSerializer
    permission_classes = [IsAuthenticated, IsOperator]
    queryset = NotificationChannel.objects.all()

    @extend_schema(tags=[TAG], summary="Notification channels")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=[TAG],
        summary="Create a notification channel",
        description="`kind`: email (target: addresses, comma-separated), webhook or slack "
        "(target: an https URL). A webhook's answer carries its signing `secret` once.",
        responses={201: ChannelCreatedSerializer},
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel, secret = services.channel_create(**serializer.validated_data, actor=request.user)
        data = ChannelCreatedSerializer(channel).data
        data["secret"] = secret
        return Response(data, status=201)


class ChannelDetailView(generics.RetrieveDestroyAPIView):
    serializer_class = ChannelSerializer
    permission_classes = [IsAuthenticated, IsOperator]
    queryset = NotificationChannel.objects.all()

    @extend_schema(tags=[TAG], summary="One notification channel")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(tags=[TAG], summary="Change a channel", request=ChannelUpdateSerializer)
    def patch(self, request, pk: int):
        channel = self.get_object()
        changes = ChannelUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        channel = services.channel_update(
            channel_id=channel.pk, actor=request.user, **changes.validated_data
        )
        return Response(ChannelSerializer(channel).data)

    @extend_schema(tags=[TAG], summary="Delete a channel")
    def delete(self, request, *args, **kwargs):
        services.channel_delete(channel_id=self.get_object().pk, actor=request.user)
        return Response(status=204)


class ChannelTestView(APIView):
    permission_classes = [IsAuthenticated, IsOperator]

    @extend_schema(
        tags=[TAG],
        summary="Send a test notification now",
        request=None,
        responses=NotificationResultSerializer,
        parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    )
    def post(self, request, pk: int):
        channel = get_object_or_404(NotificationChannel, pk=pk)
        notification = services.channel_send_test(channel_id=channel.pk)
        return Response(NotificationResultSerializer(notification).data)
