"""REST API of events: webhook endpoints and their deliveries (``/api/webhooks/``), the
reports read from the projections and the projections' operations (``/api/reports/``).

Thin views: validate, call one service or selector, serialize. Every endpoint needs
authentication; a tenant sees and manages only its own endpoints and report rows (another
tenant's answers 404), an operator everything; the projections' operations are the
operators' alone.
"""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.tenancy import is_operator, owned_by
from apps.events import projections, webhooks
from apps.events.models import OwnerDailyCount, TaskDailyCount, WebhookDelivery, WebhookEndpoint
from apps.events.serializers import (
    OwnerDailySerializer,
    ProjectionSerializer,
    ReplayedSerializer,
    ReportQuerySerializer,
    RotateInputSerializer,
    SecretRotatedSerializer,
    TaskDailySerializer,
    WebhookCreatedSerializer,
    WebhookDeliveryDetailSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointSerializer,
    WebhookUpdateSerializer,
)

TAG_WEBHOOKS = "webhooks"
TAG_REPORTS = "reports"
STATUS_PARAM = OpenApiParameter(
    "status",
    OpenApiTypes.STR,
    enum=[c.value for c in WebhookDelivery.Status],
    description="only deliveries in this status",
)
REPORT_PARAMS = [
    OpenApiParameter("start", OpenApiTypes.DATE, description="first day (UTC)"),
    OpenApiParameter("end", OpenApiTypes.DATE, description="last day (UTC)"),
    OpenApiParameter("owner", OpenApiTypes.INT, description="operators: one owner only"),
]


class IsOperator(BasePermission):
    message = "Only operators manage the projections."

    def has_permission(self, request, view) -> bool:
        return is_operator(request.user)


def _endpoints(request):
    return owned_by(WebhookEndpoint.objects.all(), request.user)


# --- webhooks -----------------------------------------------------------------------------


class WebhookListView(generics.ListCreateAPIView):
    serializer_class = WebhookEndpointSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        return _endpoints(self.request).order_by("id")

    @extend_schema(tags=[TAG_WEBHOOKS], summary="Your webhook endpoints")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="Register a webhook endpoint",
        description="Deliveries are `POST`s of `{type, timestamp, data, id, subject, "
        "owner_id, actor_id}` signed per the Standard Webhooks specification "
        "(`webhook-id`, `webhook-timestamp`, `webhook-signature`). The answer carries "
        "the signing `secret` (`whsec_…`) once.",
        responses={201: WebhookCreatedSerializer},
    )
    def post(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint, secret = webhooks.webhook_create(
            owner=request.user,
            actor=request.user,
            url=data["url"],
            event_types=data["event_types"],
            description=data.get("description", ""),
            include_system=data.get("include_system", False),
        )
        body = WebhookCreatedSerializer(endpoint).data
        body["secret"] = secret
        return Response(body, status=201)


class WebhookDetailView(generics.RetrieveDestroyAPIView):
    serializer_class = WebhookEndpointSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        return _endpoints(self.request)

    @extend_schema(tags=[TAG_WEBHOOKS], summary="One webhook endpoint")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="Change a webhook endpoint (enabling one clears its failures)",
        request=WebhookUpdateSerializer,
    )
    def patch(self, request, pk: int):
        endpoint = self.get_object()
        changes = WebhookUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_update(
            endpoint=endpoint, actor=request.user, **changes.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(tags=[TAG_WEBHOOKS], summary="Delete a webhook endpoint and its log")
    def delete(self, request, *args, **kwargs):
        webhooks.webhook_delete(endpoint=self.get_object(), actor=request.user)
        return Response(status=204)


class WebhookRotateView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="Rotate the signing secret",
        description="A new secret, shown only now. During the overlap every delivery "
        "carries two signatures (the new and the previous secret), so the receiver can "
        "switch at any moment.",
        request=RotateInputSerializer,
        responses=SecretRotatedSerializer,
        parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    )
    def post(self, request, pk: int):
        endpoint = get_object_or_404(_endpoints(request), pk=pk)
        given = RotateInputSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_rotate_secret(
            endpoint=endpoint,
            actor=request.user,
            overlap=given.validated_data.get("overlap_seconds"),
        )
        return Response(
            {
                "id": endpoint.pk,
                "secret": secret,
                "previous_secret_expires_at": endpoint.previous_secret_expires_at,
            }
        )


class WebhookDeliveryListView(generics.ListAPIView):
    serializer_class = WebhookDeliverySerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return WebhookDelivery.objects.none()
        endpoint = get_object_or_404(_endpoints(self.request), pk=self.kwargs["pk"])
        deliveries = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-id")
        status = self.request.query_params.get("status")
        if status:
            if status not in WebhookDelivery.Status.values:
                from rest_framework.exceptions import ValidationError

                raise ValidationError(
                    {"status": [f"must be one of {', '.join(WebhookDelivery.Status.values)}"]}
                )
            deliveries = deliveries.filter(status=status)
        return deliveries

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="The delivery log of an endpoint, newest first",
        parameters=[STATUS_PARAM],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _delivery(request, pk: int) -> WebhookDelivery:
    return get_object_or_404(
        WebhookDelivery.objects.filter(endpoint__in=_endpoints(request)), pk=pk
    )


class WebhookDeliveryDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="One delivery with its body and every attempt",
        responses=WebhookDeliveryDetailSerializer,
        parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    )
    def get(self, request, pk: int):
        delivery = _delivery(request, pk)
        return Response(WebhookDeliveryDetailSerializer(delivery).data)


class WebhookReplayView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        tags=[TAG_WEBHOOKS],
        summary="Send a delivery again (same webhook-id and body)",
        request=None,
        responses={202: ReplayedSerializer},
        parameters=[OpenApiParameter("pk", int, OpenApiParameter.PATH)],
    )
    def post(self, request, pk: int):
        delivery = _delivery(request, pk)
        queued = webhooks.deliveries_replay(deliveries=[delivery], actor=request.user)
        return Response({"queued": queued}, status=202)


# --- reports ------------------------------------------------------------------------------


def _report_rows(request, queryset):
    query = ReportQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    data = query.validated_data
    rows = owned_by(queryset, request.user)
    if data.get("owner") and is_operator(request.user):
        rows = rows.filter(owner_id=data["owner"])
    if data.get("start"):
        rows = rows.filter(day__gte=data["start"])
    if data.get("end"):
        rows = rows.filter(day__lte=data["end"])
    return rows.order_by("-day", "pk")


class OwnerDailyReportView(generics.ListAPIView):
    serializer_class = OwnerDailySerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        return _report_rows(self.request, OwnerDailyCount.objects.all())

    @extend_schema(
        tags=[TAG_REPORTS],
        summary="Daily counts per owner (from the events)",
        description="queued, sent, failed, bounced, unsubscribed, complained, opened, "
        "clicked per UTC day, newest first; a tenant's own rows.",
        parameters=REPORT_PARAMS,
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class TaskDailyReportView(generics.ListAPIView):
    serializer_class = TaskDailySerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return TaskDailyCount.objects.none()
        from apps.dispatch.models import Task

        task_id = self.kwargs["task_id"]
        if not owned_by(Task.objects.filter(pk=task_id), self.request.user).exists():
            raise NotFound(f"no task with id {task_id}")
        return _report_rows(self.request, TaskDailyCount.objects.filter(task_id=task_id))

    @extend_schema(
        tags=[TAG_REPORTS],
        summary="Daily counts of one task (from the events)",
        parameters=[OpenApiParameter("task_id", int, OpenApiParameter.PATH), *REPORT_PARAMS],
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class ProjectionListView(APIView):
    permission_classes = [IsAuthenticated, IsOperator]
    pagination_class = None  # a handful of projections: a bare list, documented as one

    @extend_schema(
        tags=[TAG_REPORTS],
        summary="The projections with their status and lag",
        responses=ProjectionSerializer(many=True),
    )
    def get(self, request):
        return Response(ProjectionSerializer(projections.projections_status(), many=True).data)


class _ProjectionActionView(APIView):
    permission_classes = [IsAuthenticated, IsOperator]
    operation = staticmethod(projections.projection_pause)

    def post(self, request, name: str):
        if name not in projections.PROJECTIONS:
            raise NotFound(f"no projection named {name!r}")
        self.operation(name=name, actor=request.user)
        status = {row["name"]: row for row in projections.projections_status()}[name]
        return Response(ProjectionSerializer(status).data)


def _projection_view(operation, summary: str, description: str = ""):
    class View(_ProjectionActionView):
        pass

    View.operation = staticmethod(operation)
    View.post = extend_schema(
        tags=[TAG_REPORTS],
        summary=summary,
        description=description,
        request=None,
        responses=ProjectionSerializer,
        parameters=[
            OpenApiParameter("name", str, OpenApiParameter.PATH, enum=list(projections.PROJECTIONS))
        ],
    )(View.post)
    return View


PROJECTION_VIEWS = {
    "pause": _projection_view(
        projections.projection_pause, "Pause a projection (its events are kept for it)"
    ),
    "resume": _projection_view(projections.projection_resume, "Resume a paused projection"),
    "rebuild": _projection_view(
        projections.projection_reset,
        "Reset a projection to be rebuilt",
        "Clears the read model, its processed events and checkpoint; the relay loops "
        "rebuild it from the retained events.",
    ),
}
