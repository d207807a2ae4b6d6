"""The dispatcher's policies: plain functions from numbers and errors to decisions."""

from __future__ import annotations

import dataclasses

import pytest

from apps.dispatch.conf import DispatchSettings
from apps.dispatch.engine import policy
from apps.services.senders import SendError


@pytest.fixture
def conf(db) -> DispatchSettings:
    return dataclasses.replace(
        DispatchSettings.load(),
        max_retries=2,
        backoff_strategy="fixed",
        backoff_initial=30.0,
        backoff_jitter=0.0,
        dlq_immediate_error_types=frozenset({"smtp_552"}),
        service_cooldown=300.0,
        throttle_delay=60.0,
    )


@pytest.mark.parametrize(
    ("kind", "code", "attempt", "expected"),
    [
        (SendError.TRANSIENT, 451, 1, policy.FailureDecision("retry", delay=30.0)),
        (SendError.TRANSIENT, 451, 3, policy.FailureDecision("dead")),
        (SendError.PERMANENT, 550, 1, policy.FailureDecision("failed")),
        (SendError.PERMANENT, 552, 1, policy.FailureDecision("dead")),
        (SendError.THROTTLED, 421, 5, policy.FailureDecision("requeued", refund=True)),
        (SendError.SERVICE, 535, 1, policy.FailureDecision("requeued", refund=True)),
        (SendError.LOCAL, None, 1, policy.FailureDecision("requeued", refund=True)),
    ],
)
def test_a_failed_attempt_is_retried_failed_dead_or_requeued(conf, kind, code, attempt, expected):
    error = SendError("no", kind=kind, code=code)
    assert policy.failure_decision(error, attempt=attempt, conf=conf) == expected


@pytest.mark.parametrize("attempt", [1, 3])
def test_a_message_without_an_answer_to_its_end_is_unknown_or_resent_if_asked(conf, attempt):
    error = SendError("no answer to the end of the message", kind=SendError.AMBIGUOUS)
    assert policy.failure_decision(error, attempt=attempt, conf=conf) == (
        policy.FailureDecision("unknown")
    )
    resend = dataclasses.replace(conf, resend_ambiguous=True)
    assert policy.failure_decision(error, attempt=attempt, conf=resend) == (
        policy.FailureDecision("requeued")
    )


def _change(conf, **overrides) -> policy.ServiceChange:
    values = {
        "slots": 10,
        "attempted": 4,
        "sent": 3,
        "failed": 1,
        "latencies": [0.1, 0.3],
        "fault": None,
        "sending_rate": 0.0,
        "since_commit": 0.01,
        "conf": conf,
    }
    values.update(overrides)
    return policy.service_change(**values)


def test_a_service_without_a_rate_may_send_again_at_once_and_gets_its_unused_slots(conf):
    change = _change(conf)
    assert change.next_in == 0.0 and change.unused == 6
    assert change.ratio == 0.75 and change.latency == pytest.approx(0.2) and not change.fault


def test_a_rate_limit_counts_from_the_last_commit(conf):
    change = _change(conf, sending_rate=1.0, since_commit=0.4)
    assert change.next_in == pytest.approx(0.6 + policy.SPACING_GUARD)
    assert _change(conf, sending_rate=1.0, since_commit=5.0).next_in == 0.0


def test_faults_throttling_and_shortages_set_the_next_slot(conf):
    fault = _change(conf, fault=SendError("auth", kind=SendError.SERVICE))
    assert fault.next_in == 300.0 and fault.fault
    throttled = _change(conf, fault=SendError("slow", kind=SendError.THROTTLED))
    assert throttled.next_in == 60.0 and not throttled.fault
    local = _change(conf, attempted=0, sent=0, failed=0, latencies=[], fault=None)
    assert local.next_in is None and local.unused == 10 and local.ratio is None
    shortage = SendError("EMFILE", kind=SendError.LOCAL)
    later = _change(conf, attempted=0, sent=0, failed=0, latencies=[], fault=shortage)
    assert later.next_in == policy.LOCAL_RETRY and not later.fault


@pytest.mark.parametrize(
    ("rate", "avg", "quota", "expected"),
    [
        (0.0, 0.0, None, policy.MIN_CHUNK),  # never measured: FIRST_GUESS per message
        (0.0, 0.15, None, 26),  # 50 ms replies: four seconds of work
        (0.0, 0.6, None, policy.MIN_CHUNK),  # 200 ms replies: twenty messages, 12 s
        (0.0, 0.001, None, policy.MAX_CHUNK),
        (1.0, 0.15, None, 16),  # the rate is the longer of the two: 16 s
        (2.0, 0.15, None, 8),  # twenty would not fit in 16 s
        (10.0, 0.1, None, 1),
        (0.0, 0.6, 2, 2),
        (0.0, 0.6, 0, 0),
    ],
)
def test_a_chunk_holds_what_the_service_sends_in_the_next_seconds(rate, avg, quota, expected):
    assert policy.chunk_size(sending_rate=rate, avg_response_time=avg, quota_left=quota) == expected


def test_a_rate_limited_service_is_claimed_ahead_of_its_slot_by_its_message_time():
    assert policy.claim_lead(sending_rate=0.0, avg_response_time=0.5) == 0.0
    assert policy.claim_lead(sending_rate=1.0, avg_response_time=0.15) == pytest.approx(0.25)
    assert policy.claim_lead(sending_rate=0.2, avg_response_time=0.5) == 0.2


def test_commits_are_spaced_by_the_rate_and_never_before_the_services_slot():
    assert policy.commit_at(previous=None, not_before=5.0, sending_rate=1.0) == 5.0
    spaced = policy.commit_at(previous=10.0, not_before=5.0, sending_rate=1.0)
    assert spaced == pytest.approx(11.0 + policy.SPACING_GUARD)
    assert policy.commit_at(previous=10.0, not_before=20.0, sending_rate=1.0) == 20.0
    assert policy.commit_at(previous=10.0, not_before=5.0, sending_rate=0.0) == 5.0


def test_a_late_answer_moves_the_next_commit_by_its_delay():
    """The server notes a message between its final "." and its answer: the next commit
    counts from the answer's delay beyond the quickest one its server gave — from the
    whole wait after the server's first message, which has nothing to compare with."""
    from apps.dispatch.engine.worker import _Pace

    answers: dict[tuple, float] = {}
    server = ("smtp.example.com", 587)
    pace = _Pace(sending_rate=1.0, not_before=0.0, prepare=0.2, answers=answers, server=server)
    pace.last_commit = 10.0
    pace.answered(10.3)  # the first answer: all of its 0.3 s
    assert pace.commit_at() == pytest.approx(11.3 + policy.SPACING_GUARD)
    pace.last_commit = 11.5
    pace.answered(11.55)  # quicker: on time
    assert pace.commit_at() == pytest.approx(12.5 + policy.SPACING_GUARD)
    pace.last_commit = 12.6
    pace.answered(12.8)  # 0.15 s later than the quickest
    assert pace.commit_at() == pytest.approx(13.75 + policy.SPACING_GUARD)
    # A next chunk (this service's or another's on the same server): a busy moment from
    # its first answer on (0.2 s each, 0.15 s beyond the quickest before) is late for all.
    busy = _Pace(sending_rate=1.0, not_before=14.0, prepare=0.2, answers=answers, server=server)
    for commit in (14.0, 15.2, 16.4):
        busy.last_commit = commit
        busy.answered(commit + 0.2)
        assert busy.commit_at() == pytest.approx(commit + 1.15 + policy.SPACING_GUARD)
    # Another server has answered nothing yet: its first wait counts whole.
    elsewhere = ("mx.example.org", 25)
    other = _Pace(sending_rate=1.0, not_before=0.0, prepare=0.2, answers=answers, server=elsewhere)
    other.last_commit = 10.0
    other.answered(10.2)
    assert other.commit_at() == pytest.approx(11.2 + policy.SPACING_GUARD)


def test_seats_are_laid_out_one_round_across_the_services_at_a_time():
    assert policy.seat_order({1: 3, 2: 1, 3: 2}, limit=100) == [1, 2, 3, 1, 3, 1]
    assert policy.seat_order({}, limit=3) == []


def test_a_tick_gives_whole_chunks_within_its_budget():
    # The services that fit get all their slots; the next one waits for the next tick.
    assert policy.seat_order({1: 3, 2: 3}, limit=3) == [1, 1, 1]
    assert policy.seat_order({1: 2, 2: 2, 3: 2}, limit=5) == [1, 2, 1, 2]
    # The first service always gets seats, cut to the budget.
    assert policy.seat_order({1: 300, 2: 1}, limit=200) == [1] * 200
    # Many services with small chunks: each keeps its chunk whole.
    seats = policy.seat_order(dict.fromkeys(range(1000), 6), limit=200)
    assert len(seats) == 198
    assert {seats.count(service) for service in set(seats)} == {6}


def test_a_chunk_commits_its_last_message_well_before_its_lease_ends():
    assert policy.commit_deadline(120.0) == 108.0
    assert policy.commit_deadline(5.0) == 4.0
    assert policy.may_commit_in_time(commit_at=10.0, per_message=0.5, deadline=10.5)
    assert not policy.may_commit_in_time(commit_at=10.1, per_message=0.5, deadline=10.5)
