"""REST API of the suppression list and of a task's delivery statistics.

* ``/api/suppressions/`` — list (yours and the global ones; operators every one) and
  add ``{email}`` or ``{domain}`` (``reason``, ``note``; ``global: true`` for operators).
* ``/api/suppressions/<id>/lift`` — ``POST {"reason"}``: an operator lifts an entry.
* ``/api/suppressions/import`` (CSV upload, all or nothing) and ``/api/suppressions/export``.
* ``/api/tasks/<id>/stats`` — opens, clicks (per link), unsubscribes, bounces, complaints.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ApplicationError
from apps.deliverability import selectors, services
from apps.deliverability.models import Suppression
from apps.monitoring.access import is_operator

TAG = "deliverability"


class SuppressionSerializer(serializers.ModelSerializer):
    scope = serializers.SerializerMethodField()

    class Meta:
        model = Suppression
        fields = ["id", "email", "domain", "reason", "source", "note", "scope", "created_at"]

    def get_scope(self, row: Suppression) -> str:
        return "global" if row.owner_id is None else "owner"


class SuppressionCreateSerializer(serializers.Serializer):
    email = serializers.CharField(required=False, allow_blank=True, default="")
    domain = serializers.CharField(required=False, allow_blank=True, default="")
    reason = serializers.ChoiceField(
        choices=Suppression.Reason.choices, default=Suppression.Reason.MANUAL
    )
    note = serializers.CharField(required=False, allow_blank=True, default="")


# ``global`` (a keyword): an operator's entry, honoured for every owner.
SuppressionCreateSerializer._declared_fields["global"] = serializers.BooleanField(
    required=False, default=False
)


class LiftSerializer(serializers.Serializer):
    reason = serializers.CharField()


class StatsSerializer(serializers.Serializer):
    class Link(serializers.Serializer):
        url = serializers.CharField()
        clicks = serializers.IntegerField()
        unique_clicks = serializers.IntegerField()

    sent = serializers.IntegerField()
    opens = serializers.IntegerField()
    unique_opens = serializers.IntegerField()
    machine_opens = serializers.IntegerField()
    clicks = serializers.IntegerField()
    unique_clicks = serializers.IntegerField()
    links = Link(many=True)
    unsubscribes = serializers.IntegerField()
    bounces = serializers.IntegerField()
    soft_bounces = serializers.IntegerField()
    complaints = serializers.IntegerField()


@extend_schema(tags=[TAG])
class SuppressionListView(generics.ListAPIView):
    """Your suppressions and the global ones (operators: all), newest first."""

    serializer_class = SuppressionSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Suppression.objects.none()  # schema generation
        rows = selectors.suppressions_visible_to(self.request.user)
        search = self.request.query_params.get("q", "").strip().lower()
        if search:
            rows = rows.filter(email__contains=search) | rows.filter(domain__contains=search)
        return rows.order_by("-id")

    @extend_schema(
        request=SuppressionCreateSerializer,
        responses={
            201: SuppressionSerializer,
            200: OpenApiResponse(SuppressionSerializer, description="already suppressed"),
        },
    )
    def post(self, request: Request) -> Response:
        data = SuppressionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["global"] and not is_operator(request.user):
            raise ApplicationError("only operators keep the global list", field="global")
        row, created = services.suppression_add(
            owner=None if values["global"] else request.user,
            email=values["email"],
            domain=values["domain"],
            reason=values["reason"],
            note=values["note"],
            source="api",
            actor=request.user,
        )
        return Response(
            SuppressionSerializer(row).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


@extend_schema(tags=[TAG], request=LiftSerializer, responses={200: OpenApiTypes.OBJECT})
class SuppressionLiftView(APIView):
    """Lift a suppression (operators): the audited way to mail an address again."""

    def post(self, request: Request, pk: int) -> Response:
        row = get_object_or_404(selectors.suppressions_visible_to(request.user), pk=pk)
        data = LiftSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lift = services.suppression_lift(
            suppression=row, actor=request.user, reason=data.validated_data["reason"]
        )
        return Response({"lifted": row.target, "contacts_reactivated": lift.contacts_reactivated})


@extend_schema(tags=[TAG], request=OpenApiTypes.BINARY, responses={200: OpenApiTypes.OBJECT})
class SuppressionImportView(APIView):
    """Upload a CSV (``file``) with an ``email`` or ``domain`` column (and ``reason``,
    ``note``): all rows or none; a 400 names the line."""

    parser_classes = [MultiPartParser, FormParser]

    def post(self, request: Request) -> Response:
        upload = request.FILES.get("file")
        if upload is None:
            raise ApplicationError("upload a CSV file as 'file'", field="file")
        result = services.suppressions_import_csv(
            owner=request.user, data=upload.read(), actor=request.user
        )
        return Response(result)


@extend_schema(tags=[TAG], responses={(200, "text/csv"): OpenApiTypes.STR})
class SuppressionExportView(APIView):
    """Your suppressions (operators: all) as CSV, in the import's format."""

    def get(self, request: Request) -> HttpResponse:
        text = services.suppressions_export_csv(selectors.suppressions_visible_to(request.user))
        response = HttpResponse(text, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response


@extend_schema(tags=[TAG], responses=StatsSerializer)
class TaskStatsView(APIView):
    """Delivery statistics of one of your tasks."""

    def get(self, request: Request, pk: int) -> Response:
        from apps.dispatch.models import Task
        from apps.dispatch.selectors import task_progress

        tasks = (
            Task.objects.all()
            if is_operator(request.user)
            else Task.objects.filter(owner=request.user)
        )
        task = get_object_or_404(tasks, pk=pk)
        stats = selectors.task_stats(task_id=task.pk, sent=task_progress(task.pk)["sent"])
        return Response(StatsSerializer(stats).data)
