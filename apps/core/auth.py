"""Logins: the rate limit of failed attempts (django-axes) and the API's token endpoint.

After ``AXES_FAILURE_LIMIT`` failed logins of one username from one address, that pair
is refused for ``AXES_COOLOFF_TIME``: the admin's login page and ``POST /api/auth/token/``
answer 429 (the API in its error shape), even with the right password. A success
resets the count. ``manage.py axes_reset`` lifts every lockout.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.http import HttpResponse, JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.errors import ApplicationError, error_body
from apps.core.throttling import AddressThrottle, AnonymousThrottle

LOCKED_OUT = "too many failed logins for this username from this address; try again later"


class LoginRateLimitBackend(AxesStandaloneBackend):
    """django-axes' check, for logins that come with a request (the admin, the token
    endpoint). ``authenticate()`` without one (the test client, a shell) has no address
    to count against and is left to the next backend."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


def login_username(request, credentials=None) -> str | None:
    """The username a login attempt is counted against: from the credentials, else from
    the login form, else the one the token endpoint noted on the request (a JSON body is
    not in ``request.POST``)."""
    if credentials:
        return credentials.get("username")
    noted = getattr(request, "edm_login_username", None)
    if noted:
        return noted
    return request.POST.get("username") if hasattr(request, "POST") else None


def lockout_response(request, original_response=None, credentials=None) -> HttpResponse:
    """What a locked-out login gets: 429, JSON under ``/api/``, plain text elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(LOCKED_OUT, code="locked_out"), status=429)
    return HttpResponse(LOCKED_OUT + "\n", status=429, content_type="text/plain")


class TokenInputSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=128, trim_whitespace=False)


class TokenView(APIView):
    """``POST {"username", "password"}`` → ``{"token"}`` (the user's API token).

    Wrong credentials: 400 naming ``non_field_errors``; an inactive user likewise; too
    many failures of the pair: 429."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [AddressThrottle, AnonymousThrottle]

    @extend_schema(
        request=TokenInputSerializer,
        responses={200: inline_serializer("Token", {"token": serializers.CharField()})},
    )
    def post(self, request):
        body = TokenInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # The Django request, so that the login rate limit sees the client's address
        # and flags a locked-out pair on the request the middleware answers.
        django_request = request._request
        django_request.edm_login_username = body.validated_data["username"]
        user = authenticate(django_request, **body.validated_data)
        if getattr(django_request, "axes_locked_out", False):
            return lockout_response(django_request)
        if user is None or not user.is_active:
            raise ApplicationError(
                "Unable to log in with provided credentials.",
                field="non_field_errors",
                code="authentication_failed",
            )
        # A login like the admin's (no session): last_login moves, the failures reset.
        user_logged_in.send(sender=user.__class__, request=django_request, user=user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})
