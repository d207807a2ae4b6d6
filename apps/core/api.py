"""API plumbing shared by every app: the exception handler and the health endpoint."""

from __future__ import annotations

import logging

from django.core.exceptions import (
    PermissionDenied,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from apps.core.errors import ApplicationError, error_body
from apps.core.parsers import RequestTooLarge

logger = logging.getLogger(__name__)


def _django_validation_error_body(exc: DjangoValidationError) -> dict:
    if hasattr(exc, "error_dict"):
        errors = {
            field: [str(m) for e in errs for m in e.messages]
            for field, errs in exc.error_dict.items()
        }
        return error_body("Invalid input.", code="invalid", errors=errors)
    return error_body(
        "; ".join(exc.messages), code="invalid", errors={"non_field_errors": exc.messages}
    )


def exception_handler(exc, context):
    """DRF exception handler: every client error becomes a 4xx naming field and reason.

    * ``ApplicationError`` → 400 ``{"detail", "code", "errors": {field: [reason]}}``
    * Django ``ValidationError`` → 400 with the same ``errors`` shape
    * DRF errors keep DRF's shape (``{"field": ["reason"]}`` for serializers).
    """
    if isinstance(exc, RequestTooLarge):
        return Response(exc.as_dict(), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, ApplicationError):
        return Response(exc.as_dict(), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, RequestDataTooBig | TooManyFieldsSent | TooManyFilesSent):
        # Django's own form limits (DATA_UPLOAD_MAX_*), met while DRF reads a form.
        return Response(
            error_body(str(exc), code="request_too_large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        return Response(_django_validation_error_body(exc), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, (Http404, PermissionDenied)):
        return drf_exception_handler(exc, context)
    response = drf_exception_handler(exc, context)
    if (
        response is not None
        and isinstance(exc, DRFValidationError)
        and isinstance(response.data, list)
    ):
        response.data = {"non_field_errors": response.data}
    return response


class HealthView(APIView):
    """Liveness: 200 when the database answers, 503 when it does not. No authentication."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # load balancers and probes poll it

    @extend_schema(
        responses={
            (code, "application/json"): inline_serializer(
                name=f"Health{code}",
                fields={"status": serializers.CharField(), "database": serializers.CharField()},
            )
            for code in (200, 503)
        }
    )
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except Exception as exc:  # noqa: BLE001 - any DB failure means "unhealthy"
            logger.warning("health check: database unavailable: %s", exc.__class__.__name__)
            return Response(
                {"status": "unavailable", "database": "unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"status": "ok", "database": "ok"})
