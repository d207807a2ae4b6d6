"""Public routes (no login): unsubscribe, preferences, tracking, provider webhooks."""

from __future__ import annotations

from django.urls import include, path

from apps.deliverability import views, webhooks

urlpatterns = [
    path("u/<str:token>", views.unsubscribe, name="unsubscribe"),
    path("u/<str:token>/preferences", views.preferences, name="preferences"),
    path("t/o/<str:token>.gif", views.open_pixel, name="track-open"),
    path("t/c/<str:token>", views.click, name="track-click"),
    path("inbound/generic/", webhooks.generic_feedback, name="inbound-generic"),
    # django-anymail's tracking webhooks: /inbound/<esp>/tracking/ (mailgun, postmark,
    # sendgrid, amazon_ses, brevo, mailjet, mandrill, sparkpost, resend, …).
    path("inbound/", include("anymail.urls")),
]
