"""What an outcome means, and how much a service is given: plain functions, no database.

The statements that persist these decisions live in :mod:`~apps.dispatch.engine.outcomes`;
the functions here take numbers and errors and return decisions, so each rule reads (and
is tested) on its own:

* :func:`failure_decision` — a failed attempt: retry with back-off, requeue at once
  (not the recipient's fault), fail (bounce) or dead-letter;
* :func:`service_change` — a service after its chunk: when it may send again, its
  quota refund, statistics and whether the chunk was its fault;
* :func:`chunk_size` — how many messages a reserved service gets: what it can send in
  the next ``horizon`` seconds at its rate and its measured time per message;
* :func:`claim_lead` and :func:`commit_at` — the spacing of a rate-limited service: its
  next chunk may be claimed a little ahead, so that the next message is ready, and each
  message is committed (its final ".") no earlier than ``sending_rate`` after the
  previous one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from apps.dispatch.backoff import retry_delay
from apps.dispatch.conf import DispatchSettings
from apps.services.senders import SendError

# How far ahead a reserved service's work reaches (seconds): long enough that the chunk's
# start and end (a few round trips) weigh little against its messages, short enough that a
# newcomer's task gets a share of every service within seconds.
CHUNK_SECONDS = 4.0
# Most messages in one chunk (what a service without any rate limit gets on a fast link).
MAX_CHUNK = 200
# Fewest messages in a chunk of a slow service (a rate limit of a second, 200 ms replies),
# as long as they fit in ``LONGEST_CHUNK_SECONDS``: a chunk's start and end cost a few
# statements (PostgreSQL: ~0.6 ms to start, ~1.2 ms to end, measured at 1,000 services),
# which four messages in 4 s did not outweigh, and ten still paid for with a tenth of the
# machine. Twenty (12 s at 200 ms replies) took 0.62 -> 0.68 of the bare smtplib loop at
# 200 ms x 1,000 services. The price: a newcomer's task waits up to one chunk (at most
# ``LONGEST_CHUNK_SECONDS`` stretched, and a third of the lease) for a share of such a
# service; fast services keep the short horizon.
MIN_CHUNK = 20
LONGEST_CHUNK_SECONDS = 16.0
# Time per message assumed for a service that has never sent (no ``avg_response_time``).
FIRST_GUESS = 0.25
# A rate-limited service's next chunk is claimed this much before its time, on top of its
# time per message (the next message's MAIL, RCPT and DATA go ahead of its commit).
LEAD_MARGIN = 0.1
# Added to ``sending_rate`` between two commits of a service: the spread of the moment a
# server notes a message it received (its own scheduling), so that the server's receive
# times, not only the dispatcher's clock, are never closer than ``sending_rate``. What a
# late answer shows of that spread moves the next commit too (``worker._Pace``); 20 ms
# with that still let one gap in 29,000 fall 2 ms short at 1,000 services, 30 ms none.
SPACING_GUARD = 0.03

# A service whose connection could not be opened for lack of file descriptors is tried
# again this much later (seconds).
LOCAL_RETRY = 1.0

# Outcomes of a failed attempt.
RETRY, REQUEUED, FAILED, DEAD, UNKNOWN = "retry", "requeued", "failed", "dead", "unknown"


@dataclass(frozen=True)
class FailureDecision:
    """``outcome`` (``retry``, ``requeued``, ``failed``, ``dead``, ``unknown``), the
    back-off ``delay`` (seconds) and whether the attempt is ``refund``-ed (not counted)."""

    outcome: str
    delay: float = 0.0
    refund: bool = False


def failure_decision(exc: SendError, *, attempt: int, conf: DispatchSettings) -> FailureDecision:
    """What attempt number ``attempt`` failing with ``exc`` means for the subtask.

    Throttling, a service fault and a local shortage are not the recipient's fault: the
    subtask goes back at once and the attempt is refunded. An error class listed in
    ``dlq.immediate_error_types`` is dead at once; a permanent refusal fails (the contact
    bounces); a transient one waits for its back-off, or is dead once ``max_retries`` is
    spent. A message that went out whole and got no answer (``ambiguous``) may have been
    delivered: it is ``unknown``, as on the wire of a dispatcher that died, and goes back
    at once (the attempt counted) only with ``recovery.resend_ambiguous``."""
    if exc.kind == SendError.AMBIGUOUS:
        return FailureDecision(REQUEUED if conf.resend_ambiguous else UNKNOWN)
    if exc.kind in (SendError.THROTTLED, SendError.SERVICE, SendError.LOCAL):
        return FailureDecision(REQUEUED, refund=True)
    immediate = conf.dlq_immediate_error_types
    if exc.error_class in immediate or exc.kind in immediate:
        return FailureDecision(DEAD)
    if exc.kind == SendError.PERMANENT:
        return FailureDecision(FAILED)
    if attempt > conf.max_retries:
        return FailureDecision(DEAD)
    return FailureDecision(RETRY, delay=retry_delay(attempt, conf))


@dataclass(frozen=True)
class ServiceChange:
    """A service after its chunk. ``next_in``: seconds from now until it may send again
    (``None``: nothing was attempted and nothing went wrong — it is given back as it
    was); ``unused``: quota slots to refund; ``ratio`` and ``latency``: this chunk's
    success ratio and mean time per message, for the moving averages (``None``: no
    sample); ``fault``: the chunk ended on a service fault (cool-down, failure count)."""

    next_in: float | None
    unused: int
    sent: int
    failed: int
    ratio: float | None
    latency: float | None
    fault: bool


def service_change(
    *,
    slots: int,
    attempted: int,
    sent: int,
    failed: int,
    latencies: list[float],
    fault: SendError | None,
    sending_rate: float,
    since_commit: float | None,
    conf: DispatchSettings,
) -> ServiceChange:
    """``since_commit``: seconds since the chunk's last commit (``None``: none). A rate
    limit counts from that commit (plus :data:`SPACING_GUARD`); a service fault cools the
    service down for ``recovery.service_cooldown``; a throttled one waits
    ``backoff.throttle_delay`` (at least its rate); after a local shortage (this
    machine's, not the service's: no failure counted) it waits :data:`LOCAL_RETRY`, so
    that the work goes to the services whose connections are open meanwhile."""
    kind = fault.kind if fault is not None else None
    if kind == SendError.SERVICE:
        next_in: float | None = conf.service_cooldown
    elif kind == SendError.THROTTLED:
        next_in = max(conf.throttle_delay, sending_rate)
    elif kind == SendError.LOCAL:
        next_in = LOCAL_RETRY
    elif attempted == 0:
        next_in = None
    elif sending_rate > 0 and since_commit is not None:
        next_in = max(0.0, sending_rate + SPACING_GUARD - since_commit)
    else:
        next_in = sending_rate
    return ServiceChange(
        next_in=next_in,
        unused=max(0, slots - attempted),
        sent=sent,
        failed=failed,
        ratio=(sent / attempted) if attempted else None,
        latency=(sum(latencies) / len(latencies)) if latencies else None,
        fault=kind == SendError.SERVICE,
    )


def per_message_seconds(*, sending_rate: float, avg_response_time: float) -> float:
    """The time one message of a service takes: its rate limit or its measured time per
    message, whichever is longer (:data:`FIRST_GUESS` before it has sent anything)."""
    return max(sending_rate, avg_response_time if avg_response_time > 0 else FIRST_GUESS)


def chunk_size(
    *,
    sending_rate: float,
    avg_response_time: float,
    quota_left: int | None,
    horizon: float = CHUNK_SECONDS,
    longest: float = LONGEST_CHUNK_SECONDS,
    cap: int = MAX_CHUNK,
    spread: float = 0.5,
) -> int:
    """How many messages a reserved service gets: what it sends in ``horizon`` seconds —
    or, for a slow service, :data:`MIN_CHUNK` messages if they fit in ``longest``
    seconds — at least 1, at most ``cap``, never beyond the quota left today (``None``: no
    quota). ``spread`` (0 to 1, drawn at random by the tick) stretches the time between
    0.75 and 1.25 times: chunks claimed together (a task's start, 1,000 services at once)
    end at different moments, so their ends and the next claims do not all come in one
    wave. A fast service keeps the short horizon: a task's last chunks then end close
    together, and a newcomer gets a share of every service within seconds."""
    per_message = per_message_seconds(
        sending_rate=sending_rate, avg_response_time=avg_response_time
    )
    stretch = 0.75 + 0.5 * spread
    size = math.floor(horizon * stretch / per_message)
    if size < MIN_CHUNK:
        size = min(math.floor(MIN_CHUNK * stretch), math.floor(longest * stretch / per_message))
    size = max(1, min(cap, size))
    return size if quota_left is None else max(0, min(size, quota_left))


def claim_lead(*, sending_rate: float, avg_response_time: float) -> float:
    """How long before its next commit a rate-limited service may be claimed again (0
    without a rate limit: it is ready as soon as its chunk ends)."""
    if sending_rate <= 0:
        return 0.0
    return min(sending_rate, max(avg_response_time, 0.0) + LEAD_MARGIN)


def commit_at(*, previous: float | None, not_before: float, sending_rate: float) -> float:
    """The earliest moment (``time.monotonic()``) the next message of a chunk may be
    committed: not before ``not_before`` (the service's ``next_available_at`` when it was
    reserved), and ``sending_rate`` plus :data:`SPACING_GUARD` after the ``previous``
    commit of the chunk, if any."""
    if previous is None or sending_rate <= 0:
        return not_before
    return max(not_before, previous + sending_rate + SPACING_GUARD)


def commit_deadline(lease_seconds: float) -> float:
    """Seconds after its claim by which a chunk has committed its last message: a tenth
    of the lease (at least 1 s) before the lease ends. The service is held until the
    lease ends plus its rate, so the next holder's first commit comes at least that
    rate after any commit of this chunk — even if this dispatcher dies, or is slow."""
    return lease_seconds - max(1.0, lease_seconds / 10)


def may_commit_in_time(*, commit_at: float, per_message: float, deadline: float) -> bool:
    """Whether a message whose commit may go at ``commit_at`` (``time.monotonic()``) and
    takes about ``per_message`` seconds is committed before the chunk's ``deadline``."""
    return commit_at + per_message <= deadline


def seat_order(slots: dict[int, int], *, limit: int) -> list[int]:
    """The services of a pool laid out slot by slot, one round across the services at a
    time (``{service id: slots}``, in the order given), at most ``limit`` seats.

    Whole chunks: the services are taken in the order given as long as all their slots
    fit within ``limit`` (the first one always, cut to ``limit``); the ones that do not
    fit get no seat this time — they stay ready, and the loop ticks again at once. A
    budget cut across every service instead (one seat each when many are ready at once)
    would give each a chunk of a message or two, and each chunk's start and end would
    weigh on every message. The round-robin layout keeps a partial fill (a task's last
    subtasks) spread over every service taken instead of filling the first ones."""
    taken: dict[int, int] = {}
    room = limit
    for service_id, count in slots.items():
        if room <= 0 or (taken and count > room):
            break
        taken[service_id] = min(count, room)
        room -= taken[service_id]
    seats: list[int] = []
    for round_number in range(max(taken.values(), default=0)):
        for service_id, count in taken.items():
            if count > round_number:
                seats.append(service_id)
    return seats
