"""``/metrics``: the Prometheus exposition.

* Open unless ``EDM_METRICS_TOKEN`` is set (then ``Authorization: Bearer <token>``).
* The cluster-wide figures come from the database (``collectors.DatabaseCollector`` and
  the other apps' collectors registered with ``collectors.cluster_collector_register``).
* With ``PROMETHEUS_MULTIPROC_DIR`` set (the same directory for the web server and the
  q2 cluster of one node, emptied when the node starts), the counters every process of
  the node keeps — the dispatchers' ``edm_dispatch_*`` among them — are merged from it
  (prometheus_client's multiprocess mode); otherwise this process's own.
* Django's per-view request metrics are kept only for the views in
  ``settings.EDM_METRICS_VIEWS``; every other view is summed into ``view="other"``, so
  a scrape stays small however many admin and API pages were used; the per-template
  response counters and the body-size histograms are left out, and so are the
  ``_created`` series of counters.
"""

from __future__ import annotations

import hmac
from collections import defaultdict

from django.conf import settings
from django.http import HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import Metric

from apps.monitoring.collectors import cluster_collectors

OTHER = "other"


def _coarse(family: Metric, keep: frozenset[str]) -> Metric:
    """The family with the samples of views not in ``keep`` summed under ``other``."""
    if not any("view" in sample.labels for sample in family.samples):
        return family
    merged: dict[tuple, float] = defaultdict(float)
    kept = []
    for sample in family.samples:
        view = sample.labels.get("view")
        if view is None or view in keep:
            kept.append(sample)
            continue
        labels = {**sample.labels, "view": OTHER}
        merged[(sample.name, tuple(sorted(labels.items())))] += sample.value
    coarse = Metric(family.name, family.documentation, family.type, family.unit)
    coarse.samples = kept
    for (name, labels), value in merged.items():
        coarse.add_sample(name, dict(labels), value)
    return coarse


# Left out: per-template response counters (they grow with every admin page ever
# rendered) and the request/response body-size histograms (rarely read, 40 lines).
DROPPED = ("by_templatename", "body_total_bytes")


class _Filtered:
    def __init__(self, source, keep: frozenset[str]) -> None:
        self.source = source
        self.keep = keep

    def collect(self):
        for family in self.source.collect():
            if not family.name.startswith("django_http"):
                yield family
            elif not any(part in family.name for part in DROPPED):
                yield _coarse(family, self.keep)


def exposition() -> bytes:
    """The whole ``/metrics`` text."""
    keep = frozenset(settings.EDM_METRICS_VIEWS)
    output = CollectorRegistry(auto_describe=False)
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    if directory:
        merged = CollectorRegistry(auto_describe=False)
        multiprocess.MultiProcessCollector(merged, path=str(directory))
        output.register(_Filtered(merged, keep))
        for collector in cluster_collectors():
            output.register(collector)
    else:
        # The default registry holds this process's metrics and the cluster collectors.
        output.register(_Filtered(REGISTRY, keep))
    return generate_latest(output)


def metrics(request):
    token = settings.EDM_METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            response = HttpResponse("authentication required\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
