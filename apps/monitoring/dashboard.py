"""The operator dashboard at ``/admin/dashboard/`` (an admin page: ``admin.py`` adds it
to the admin site's URLs through ``admin_view``, and the admin index links to it).

One page, rendered on the server, charts as inline SVG (``charts``): sends per minute
over the last hour and the last day, queue depth over the last hour, per-service state
and throughput, the service reservations and dispatcher loops, open alerts with
acknowledge / resolve, the slowest-waiting tasks. It refreshes itself every
``REFRESH_SECONDS`` by fetching its own body again (``static/monitoring/dashboard.js``;
without script it still renders, and a reload refreshes it). An operator sees the whole
system; a tenant (a staff user who is not an operator) sees its own tasks only.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.cache import cache
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from apps.config.selectors import config_get
from apps.core.errors import ApplicationError
from apps.monitoring import selectors, services
from apps.monitoring.charts import Series, line_chart
from apps.monitoring.models import Alert, ServiceRate, SystemSample, TaskWaitMetric

REFRESH_SECONDS = 15
# A new sample changes the cache key anyway; this only bounds how long the time axis
# may lag when no sample is taken (the monitor loop stopped).
CHARTS_CACHE_SECONDS = 60
SENDS = [
    Series("sent", "sent", "#2e7d32"),
    Series("failed", "failed", "#c62828"),
    Series("dead", "dead", "#6a1b9a"),
]
DEPTH = [
    Series("pending", "pending", "#1565c0"),
    Series("waiting", "waiting", "#ef6c00"),
    Series("in_flight", "claimed / on the wire", "#00838f"),
]


def _per_minute(points: list[dict], step: float) -> list[tuple]:
    factor = 60.0 / step
    return [(p["time"], {s.key: (p.get(s.key) or 0) * factor for s in SENDS}) for p in points]


def _charts(owner_id: int | None, now, newest) -> list:
    """The charts, drawn again only when a new sample has landed (they change with the
    samples alone): cached per process, keyed by the owner and the newest sample's time
    (``newest``; ``None`` before the first sample)."""
    key = f"edm:dashboard-charts:{owner_id}:{newest.timestamp() if newest else 'none'}"
    charts = cache.get(key)
    if charts is None:
        charts = _draw_charts(owner_id, now)
        cache.set(key, charts, timeout=CHARTS_CACHE_SECONDS)
    return charts


def _draw_charts(owner_id: int | None, now) -> list:
    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
    # One point per sample over the last hour (per minute at the default interval).
    step = max(5.0, float(config_get("monitoring.sample_interval")))
    hour = selectors.performance_series(start=hour_ago, end=now, step=step, owner_id=owner_id)
    day = selectors.performance_series(start=day_ago, end=now, step=600, owner_id=owner_id)
    charts = [
        line_chart(
            name="sends-hour",
            title="Sends per minute, last hour",
            points=_per_minute(hour, step),
            series=SENDS,
            start=hour_ago,
            end=now,
            unit="messages/min",
        ),
        line_chart(
            name="sends-day",
            title="Sends per minute, last 24 hours",
            points=_per_minute(day, 600),
            series=SENDS,
            start=day_ago,
            end=now,
            unit="messages/min, 10-minute means",
        ),
    ]
    if owner_id is None:
        depth = [
            (
                p["time"],
                {
                    "pending": p["pending"],
                    "waiting": p["waiting"],
                    "in_flight": (p["allocated"] or 0) + (p["sending"] or 0),
                },
            )
            for p in hour
        ]
        charts.append(
            line_chart(
                name="queue-hour",
                title="Queue depth, last hour",
                points=depth,
                series=DEPTH,
                start=hour_ago,
                end=now,
                unit="messages",
            )
        )
    return charts


# The services table shows the worst few (a dashboard points at trouble); the admin's
# list of email services has them all.
SERVICE_ROWS = 20
# Reservations shown: the services held longest.
RESERVATION_ROWS = 20
# Worst first: out of service, then out of quota, then cooling down, then the rest.
STATE_RANK = {"disabled": 0, "exhausted": 1, "cooling": 2}


def _clock(moment) -> str:
    return f"{timezone.localtime(moment):%H:%M:%S}" if moment else ""


def _rows(rows: list[tuple]) -> SafeString:
    """``<tr>`` rows of escaped cells; a row's first item is its ``state-…`` class. Plain
    escaping and joining: the template language, or format_html per cell, costs ten
    times as much."""
    return mark_safe(
        "\n".join(
            f'<tr class="state-{escape(row[0])}">'
            + "".join(f"<td>{escape(str(cell))}</td>" for cell in row[1:])
            + "</tr>"
            for row in rows
        )
    )


def services_worst(services: list[dict], limit: int = SERVICE_ROWS) -> list[dict]:
    """The ``limit`` services most in need of a look: disabled, exhausted, cooling, then
    by lowest success rate and most failures."""
    return sorted(
        services,
        key=lambda s: (
            STATE_RANK.get(s["state"], 3),
            s["success_rate"],
            -s["total_failed"],
            s["name"],
        ),
    )[:limit]


def _services_rows(services: list[dict], rates: dict) -> SafeString:
    """The services table's rows, built here rather than in the template (see ``_rows``)."""
    rows = []
    for s in services:
        rate = rates.get(s["id"])
        held = f"{s['held_by'][:12]}… since {_clock(s['held_since'])}" if s["held_by"] else ""
        state = s["state"] + (f" — {s['disabled_reason']}" if s["disabled_reason"] else "")
        quota = f"{s['used_today']}" + (f" / {s['daily_quota']}" if s["daily_quota"] else "")
        rows.append(
            (
                s["state"],
                s["name"],
                s["pool"],
                state,
                held,
                f"{rate:.1f}" if rate is not None else "",
                s["total_sent"],
                s["total_failed"],
                f"{s['success_rate']:.3f}",
                f"{s['avg_response_time']:.3f} s",
                quota,
            )
        )
    return _rows(rows)


def _reservations_rows(reservations: list[dict]) -> SafeString:
    """The reservations held longest, oldest first."""
    oldest = sorted(reservations, key=lambda r: r["held_since"] or timezone.now())
    return _rows(
        [
            ("held", r["service"], r["held_by"], _clock(r["held_since"]), r["chunks"])
            for r in oldest[:RESERVATION_ROWS]
        ]
    )


def dashboard_context(user) -> dict:
    """Everything the dashboard shows, for ``user``'s scope."""
    now = timezone.now()
    owner_id = selectors.owner_scope(user)
    reads = selectors.Reads(owner_id)
    queue = selectors.queue_status(owner_id=owner_id, reads=reads)
    own = selectors.querysets_fetch(_own_reads(user, owner_id, now))
    waiting = sorted(
        (t for t in queue["tasks"] if t["wait_seconds"] is not None),
        key=lambda t: -t["wait_seconds"],
    )[:10]
    context = {
        "operator": owner_id is None,
        "now": now,
        "refresh_seconds": REFRESH_SECONDS,
        "charts": _charts(owner_id, now, next(iter(own["newest_sample"]), None)),
        "queue": queue,
        "alerts": own["alerts"],
        "waiting_tasks": waiting,
        "slowest_waits": own["slowest_waits"],
    }
    if owner_id is None:
        worst = services_worst(queue["by_service"])
        context["service_rows"] = _services_rows(worst, dict(own["service_rates"]))
        context["services_shown"] = len(worst)
        context["services_total"] = len(queue["by_service"])
        context["reservation_rows"] = _reservations_rows(queue["reservations"])
        context["reservations_shown"] = min(len(queue["reservations"]), RESERVATION_ROWS)
        _healthy, health = selectors.system_health(reads)
        context["health"] = health
    return context


def _own_reads(user, owner_id: int | None, now) -> dict:
    """Monitoring's own rows the page shows, read together in one round trip
    (``selectors.querysets_fetch``): the open alerts (the columns the table shows), the
    slowest first sends of the last day, the newest sample's time (the charts' cache
    key), and for an operator each service's sends per minute."""
    slow = TaskWaitMetric.objects.filter(first_sent_at__gte=now - timedelta(days=1))
    if owner_id is not None:
        slow = slow.filter(owner_id=owner_id)
    reads = {
        "alerts": selectors.alerts_visible(user)
        .select_related(None)
        .exclude(status=Alert.Status.RESOLVED)
        .only("id", "level", "rule_name", "status", "subject_label", "value", "fired_at")
        .order_by("-fired_at")[:50],
        "slowest_waits": slow.order_by("-wait_seconds").values(
            "task_id",
            "wait_seconds",
            task_name=F("task__name"),
            owner_name=F("task__owner__username"),
            task_status=F("task__status"),
        )[:10],
        "newest_sample": SystemSample.objects.order_by("-taken_at").values_list(
            "taken_at", flat=True
        )[:1],
    }
    if owner_id is None:
        reads["service_rates"] = ServiceRate.objects.values_list("service_id", "sent_per_minute")
    return reads


def _admin_context(request: HttpRequest, admin_site) -> dict:
    """``admin_site.each_context`` without the list of every app and model: the page
    shows no navigation sidebar (it is wide already), and building that list for each
    refresh cost a tenth of the page."""
    script_name = request.META.get("SCRIPT_NAME", "")
    site_url = admin_site.site_url
    return {
        "site_title": admin_site.site_title,
        "site_header": admin_site.site_header,
        "site_url": script_name if site_url == "/" and script_name else site_url,
        "has_permission": admin_site.has_permission(request),
        "available_apps": [],
        "is_popup": False,
        "is_nav_sidebar_enabled": False,
        "log_entries": admin_site.get_log_entries(request),
    }


def dashboard_view(request: HttpRequest, *, admin_site) -> HttpResponse:
    context = {**_admin_context(request, admin_site), "title": "Dashboard"}
    context.update(dashboard_context(request.user))
    template = (
        "admin/monitoring/dashboard_body.html"
        if request.GET.get("fragment")
        else "admin/monitoring/dashboard.html"
    )
    return TemplateResponse(request, template, context)


@require_POST
@staff_member_required
def dashboard_alert_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    handler = {"acknowledge": services.alert_acknowledge, "resolve": services.alert_resolve}[action]
    try:
        alert = handler(
            alert_id=pk, actor=request.user, visible=selectors.alerts_visible(request.user)
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        verb = "acknowledged" if action == "acknowledge" else "resolved"
        messages.success(request, f"Alert {alert.pk} {verb}.")
    return redirect("admin:dashboard")
