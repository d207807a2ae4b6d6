"""Safe outbound HTTP against a real local server: addresses, scheme, redirects, errors."""

from __future__ import annotations

import socket

import pytest

from apps.core import outbound


@pytest.fixture
def allow_http(settings):
    settings.EDM_OUTBOUND_HTTPS_ONLY = False


def test_loopback_is_refused_unless_private_addresses_are_allowed(
    settings, allow_http, http_receiver
):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(outbound.OutboundError, match="not a public address") as refused:
        outbound.post(http_receiver.url, b"{}")
    assert refused.value.permanent
    assert http_receiver.requests == []

    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    response = outbound.post(http_receiver.url, b'{"a": 1}', headers={"X-Test": "yes"})
    assert response.status == 200
    assert http_receiver.requests[0].body == b'{"a": 1}'
    assert http_receiver.requests[0].headers["x-test"] == "yes"


def test_a_host_name_is_checked_by_the_addresses_it_resolves_to(
    settings, allow_http, http_receiver
):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(outbound.OutboundError, match="localhost resolves to"):
        outbound.post(http_receiver.url.replace("127.0.0.1", "localhost"), b"{}")


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5/x", "http://169.254.169.254/latest", "http://[::1]/", "http://100.64.0.1/"],
)
def test_check_url_refuses_literal_private_addresses(settings, allow_http, url):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = False
    with pytest.raises(ValueError, match="not a public address"):
        outbound.check_url(url)


def test_only_https_when_required(settings):
    settings.EDM_OUTBOUND_HTTPS_ONLY = True
    with pytest.raises(ValueError, match="only https"):
        outbound.check_url("http://example.org/hook")
    outbound.check_url("https://example.org/hook")
    with pytest.raises(ValueError, match="credentials"):
        outbound.check_url("https://user:pw@example.org/hook")
    with pytest.raises(ValueError, match="must start with https"):
        outbound.check_url("ftp://example.org/")


@pytest.mark.parametrize(
    ("status", "permanent"), [(500, False), (503, False), (429, False), (404, True), (400, True)]
)
def test_answers_are_classified_for_retrying(
    settings, allow_http, http_receiver, status, permanent
):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    http_receiver.statuses = [status]
    with pytest.raises(outbound.OutboundError, match=f"answered {status}") as failed:
        outbound.post(http_receiver.url, b"{}")
    assert failed.value.permanent is permanent
    assert failed.value.status == status


def test_a_redirect_is_not_followed(settings, allow_http, http_receiver):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    http_receiver.statuses = [302]
    with pytest.raises(outbound.OutboundError, match="redirects are not followed") as failed:
        outbound.post(http_receiver.url, b"{}")
    assert failed.value.permanent
    assert len(http_receiver.requests) == 1


def test_a_server_that_does_not_answer_times_out_as_a_transient_error(settings, allow_http):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with pytest.raises(outbound.OutboundError, match="timed out") as failed:
            outbound.post(url, b"{}", timeout=0.3)
    assert not failed.value.permanent


def test_a_closed_port_is_a_transient_error(settings, allow_http):
    settings.EDM_WEBHOOKS_ALLOW_PRIVATE = True
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(outbound.OutboundError) as failed:
        outbound.post(f"http://127.0.0.1:{port}/", b"{}")
    assert not failed.value.permanent
