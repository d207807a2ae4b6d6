"""Baselines of the dispatch throughput benchmark (see BENCHMARKS.md, "Dispatch throughput").

Everything the dispatch benchmark needs to put EDM side by side with its baselines in one
run, against one sink (``bench/sink.py``, a separate process):

``make_recipients(n, seed=1) -> list[Recipient]``
    The workload: ``n`` distinct recipients with a first name and a ``city`` attribute,
    the same for a given seed. ``Recipient.context()`` is the template context
    (``{"contact": {"email", "first_name", "attributes": {"city"}}}``).
``SUBJECT_TEMPLATE``, ``TEXT_TEMPLATE``, ``HTML_TEMPLATE``, ``FROM_EMAIL``, ``FROM_NAME``
    The personalized ~2 KB text+HTML message, as Django templates
    (``{{ contact.first_name }}``, ``{{ contact.attributes.city }}``).
``render_parts(recipient) -> (subject, text, html)``
    The message's parts rendered with Django's template engine.
``run_baseline_a(recipients, *, sink, connections=8) -> dict``
    Baseline A, the transport limit: every message built with ``apps.dispatch.mime``
    *before* the clock starts, then sent as bytes over ``connections`` reused smtplib
    connections (one thread each), no database.
``run_baseline_a_prime(recipients, *, sink, connections=8) -> dict``
    Baseline A': the same loop, rendering each message and building it with Django's
    ``EmailMultiAlternatives`` inside the clock — what a hand-written Django script
    reaches.
``run_post_office(n, *, seed=1, sink, processes=2, threads=4, batch_size=5000,
log_level=1) -> dict``
    Baseline B, the peer: django-post-office 3.12.0 queues ``n`` emails
    (``mail.send_many``, timed apart as ``queue_seconds``) in its own database on the
    same PostgreSQL, then ``send_queued_mail_until_done`` (``manage.py send_queued_mail
    --processes``) sends them through Django's SMTP backend with ``threads`` threads per
    process; both steps run in a subprocess with ``bench.peer_settings``.
``postgres_cpu_seconds() -> float | None``
    CPU seconds used so far by the PostgreSQL server of Django's default connection
    (the postmaster, its live backends and its reaped ones, from ``/proc``); take the
    difference around a run. None when the server is not on this machine.
``cpu_seconds() -> float``
    This process's user+system CPU seconds (all threads).

Every ``run_*`` resets the sink first, checks afterwards that each recipient got exactly
one message (``verified`` — the run raises ``AssertionError`` if not) and returns a dict
with ``messages``, ``seconds``, ``msgs_per_s``, ``sender_cpu_s``, ``sink_cpu_s`` (and for
B ``queue_seconds``, ``postgres_cpu_s``). Django must be set up (``_common.setup_django``)
for A' and B; A needs only ``apps.dispatch.mime``.
"""

from __future__ import annotations

import json
import os
import random
import resource
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FROM_EMAIL = "news@bench.edm.example"
FROM_NAME = "EDM Bench"
MESSAGE_ID_DOMAIN = "bench.edm.example"

SUBJECT_TEMPLATE = "{{ contact.first_name }}, your {{ contact.attributes.city }} weekend is ready"

TEXT_TEMPLATE = """\
Hello {{ contact.first_name }},

Your weekend in {{ contact.attributes.city }} is ready. We picked three places
that readers from {{ contact.attributes.city }} liked most this season, and kept
a table for you at each of them until Friday evening.

1. The covered market: open from 8 am, best before the lunch crowd.
2. The river walk: two hours at an easy pace, with a ferry back to the centre.
3. The old theatre: guided tours on Saturday at 11 am and 3 pm.

Your booking code is valid for two people. Show it at the door or quote it on
the phone; there is nothing to print.

If your plans change, you can move the booking to another weekend from your
account page, at no cost, up to 24 hours before.

Have a good weekend, {{ contact.first_name }}!

The EDM Bench team

You receive this message because you subscribed to our weekend letters.
Unsubscribe: https://bench.edm.example/u/{{ contact.email }}
"""

HTML_TEMPLATE = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Your weekend</title></head>
<body style="margin:0;padding:0;background:#f4f4f4;font-family:Arial,sans-serif">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0">
<tr><td style="padding:24px;background:#ffffff">
<h1 style="font-size:22px;color:#222">Hello {{ contact.first_name }},</h1>
<p style="font-size:15px;line-height:1.5;color:#333">Your weekend in
<strong>{{ contact.attributes.city }}</strong> is ready. We picked three places that readers
from {{ contact.attributes.city }} liked most this season.</p>
<ol style="font-size:15px;line-height:1.5;color:#333">
<li>The covered market: open from 8 am, best before the lunch crowd.</li>
<li>The river walk: two hours at an easy pace, with a ferry back.</li>
<li>The old theatre: guided tours on Saturday at 11 am and 3 pm.</li>
</ol>
<p><a href="https://bench.edm.example/b/{{ contact.email }}"
style="display:inline-block;padding:10px 18px;background:#0a6;color:#fff">See my booking</a></p>
<p style="font-size:12px;color:#888">You receive this message because you subscribed to our
weekend letters. <a href="https://bench.edm.example/u/{{ contact.email }}">Unsubscribe</a>.</p>
</td></tr></table>
</body></html>
"""

_FIRST_NAMES = (
    "Alice", "Bruno", "Chloé", "Dmitri", "Elena", "François", "Grace", "Hugo", "Inès", "José",
    "Karin", "Łukasz", "Maya", "Noah", "Olga", "Pierre", "Quentin", "Rosa", "Søren", "Tomás",
    "Uma", "Victor", "Wen", "Xavier", "Yuki", "Zoé",
)  # fmt: skip
_CITIES = (
    "Lyon", "Porto", "Kraków", "Gent", "Bologna", "Sevilla", "Bergen", "Tallinn", "Zürich",
    "Brno", "Göteborg", "Nantes", "Ljubljana", "Cork", "Malmö", "Trieste",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    first_name: str
    city: str

    def context(self) -> dict[str, Any]:
        return {
            "contact": {
                "email": self.email,
                "first_name": self.first_name,
                "attributes": {"city": self.city},
            }
        }


def make_recipients(n: int, seed: int = 1) -> list[Recipient]:
    """``n`` distinct recipients (``r<seed>-<i>@<domain>``), names and cities drawn with
    ``random.Random(seed)``: the same list for the same arguments."""
    rng = random.Random(seed)
    return [
        Recipient(
            email=f"r{seed}-{i:07d}@rcpt{i % 50}.bench.example",
            first_name=rng.choice(_FIRST_NAMES),
            city=rng.choice(_CITIES),
        )
        for i in range(n)
    ]


_templates: tuple[Any, Any, Any] | None = None


def render_parts(recipient: Recipient) -> tuple[str, str, str]:
    """(subject, text, html) of ``recipient``'s message, rendered with Django templates
    (autoescaping on for the HTML only, as EDM renders them)."""
    global _templates
    from django.template import Context, Engine

    if _templates is None:
        engine = Engine()
        _templates = (
            engine.from_string("{% autoescape off %}" + SUBJECT_TEMPLATE + "{% endautoescape %}"),
            engine.from_string("{% autoescape off %}" + TEXT_TEMPLATE + "{% endautoescape %}"),
            engine.from_string(HTML_TEMPLATE),
        )
    context = Context(recipient.context())
    subject, text, html = (template.render(context) for template in _templates)
    return subject, text, html


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds() -> float | None:
    """CPU seconds of the PostgreSQL server behind Django's default connection so far.

    Sums, from ``/proc``, the postmaster's own and reaped children's time plus every live
    child's (backends, walwriter, ...). Only meaningful as a difference between two calls.
    Returns None when the server's processes are not visible (another machine).
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        postmaster = int(_proc_stat(backend)[1])
        fields = _proc_stat(postmaster)
    except (OSError, ValueError):
        return None
    total = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            child = _proc_stat(int(entry.name))
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(child[1]) == postmaster:
            total += int(child[11]) + int(child[12])
    return total / ticks


def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after "pid (comm)": [state, ppid, ...]."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


# -- Baselines A and A' -------------------------------------------------------------------


def build_messages(recipients: Sequence[Recipient]) -> list[bytes]:
    """Every recipient's message, rendered and built with ``apps.dispatch.mime``."""
    from apps.dispatch.mime import build_message, make_message_id

    messages = []
    for recipient in recipients:
        subject, text, html = render_parts(recipient)
        messages.append(
            build_message(
                from_email=FROM_EMAIL,
                from_name=FROM_NAME,
                to=recipient.email,
                to_name=recipient.first_name,
                subject=subject,
                text=text,
                html=html,
                message_id=make_message_id(MESSAGE_ID_DOMAIN),
                headers={
                    "List-Unsubscribe": f"<https://bench.edm.example/u/{recipient.email}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            )
        )
    return messages


def run_baseline_a(
    recipients: Sequence[Recipient], *, sink: Any, connections: int = 8
) -> dict[str, Any]:
    """Baseline A: pre-built messages sent as bytes over reused connections."""
    started = time.perf_counter()
    messages = build_messages(recipients)
    build_seconds = time.perf_counter() - started

    def send(client: smtplib.SMTP, index: int) -> None:
        client.sendmail(FROM_EMAIL, [recipients[index].email], messages[index])

    figures = _run_threads(len(recipients), sink=sink, connections=connections, send=send)
    figures["prebuild_seconds"] = round(build_seconds, 2)
    figures["message_bytes_avg"] = round(sum(map(len, messages)) / max(1, len(messages)))
    return _verified(figures, sink, recipients)


def run_baseline_a_prime(
    recipients: Sequence[Recipient], *, sink: Any, connections: int = 8
) -> dict[str, Any]:
    """Baseline A': each message rendered and built with EmailMultiAlternatives inside
    the clock (as Django's SMTP backend does: ``message().as_bytes(linesep="\\r\\n")``)."""
    from django.core.mail import EmailMultiAlternatives

    sender = f"{FROM_NAME} <{FROM_EMAIL}>"

    def send(client: smtplib.SMTP, index: int) -> None:
        recipient = recipients[index]
        subject, text, html = render_parts(recipient)
        message = EmailMultiAlternatives(
            subject,
            text,
            sender,
            [f"{recipient.first_name} <{recipient.email}>"],
            headers={
                "List-Unsubscribe": f"<https://bench.edm.example/u/{recipient.email}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        message.attach_alternative(html, "text/html")
        data = message.message().as_bytes(linesep="\r\n")
        client.sendmail(FROM_EMAIL, [recipient.email], data)

    figures = _run_threads(len(recipients), sink=sink, connections=connections, send=send)
    return _verified(figures, sink, recipients)


def _run_threads(
    count: int,
    *,
    sink: Any,
    connections: int,
    send: Callable[[smtplib.SMTP, int], None],
) -> dict[str, Any]:
    """Send messages 0..count-1 from ``connections`` threads, each over one reused
    smtplib connection (message i goes through connection i % connections)."""
    sink.reset()
    sink_cpu_before = _sink_cpu(sink)
    errors: list[BaseException] = []
    clients = [smtplib.SMTP(sink.host, sink.port) for _ in range(connections)]
    for client in clients:
        client.ehlo()

    def worker(number: int) -> None:
        try:
            for index in range(number, count, connections):
                send(clients[number], index)
        except BaseException as error:  # reported after the join; the run is invalid
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    for client in clients:
        client.quit()
    if errors:
        raise RuntimeError(f"{len(errors)} sender thread(s) failed: {errors[0]!r}") from errors[0]
    return {
        "messages": count,
        "connections": connections,
        "seconds": round(elapsed, 2),
        "msgs_per_s": round(count / elapsed),
        "sender_cpu_s": round(cpu, 2),
        "sink_cpu_s": round(_sink_cpu(sink) - sink_cpu_before, 2),
    }


def _sink_cpu(sink: Any) -> float:
    stats = sink.stats()
    return stats["cpu_user_s"] + stats["cpu_system_s"]


def _verified(figures: dict[str, Any], sink: Any, recipients: Sequence[Recipient]) -> dict:
    check = sink.verify(recipient.email for recipient in recipients)
    if not check["ok"]:
        raise AssertionError(f"the sink did not get exactly one message per recipient: {check}")
    figures["verified"] = True
    return figures


# -- Baseline B: django-post-office ---------------------------------------------------------


def run_post_office(
    n: int,
    *,
    seed: int = 1,
    sink: Any,
    processes: int = 2,
    threads: int = 4,
    batch_size: int = 5000,
    log_level: int = 1,
) -> dict[str, Any]:
    """Baseline B: queue ``make_recipients(n, seed)`` with django-post-office, then time
    ``send_queued_mail_until_done`` with ``processes`` x ``threads`` connections, with
    production settings as EDM's dispatchers (``DEBUG`` off)."""
    from bench._common import production_env

    env = production_env(
        PEER_SMTP_HOST=sink.host,
        PEER_SMTP_PORT=str(sink.port),
        PEER_BATCH_SIZE=str(batch_size),
        PEER_THREADS_PER_PROCESS=str(threads),
        PEER_LOG_LEVEL=str(log_level),
    )
    queued = _peer_step(["queue", "--n", str(n), "--seed", str(seed)], env)
    sink.reset()
    sink_cpu_before = _sink_cpu(sink)
    postgres_before = postgres_cpu_seconds()
    sent = _peer_step(["send", "--processes", str(processes)], env)
    postgres_after = postgres_cpu_seconds()
    figures = {
        "messages": n,
        "processes": processes,
        "threads_per_process": threads,
        "batch_size": batch_size,
        "queue_seconds": queued["queue_seconds"],
        "seconds": sent["send_seconds"],
        "msgs_per_s": round(n / sent["send_seconds"]),
        "sent": sent["sent"],
        "failed": sent["failed"],
        "sender_cpu_s": sent["sender_cpu_s"],
        "sink_cpu_s": round(_sink_cpu(sink) - sink_cpu_before, 2),
        "postgres_cpu_s": (
            round(postgres_after - postgres_before, 2)
            if postgres_before is not None and postgres_after is not None
            else None
        ),
    }
    return _verified(figures, sink, make_recipients(n, seed))


def _peer_step(arguments: list[str], env: dict[str, str]) -> dict[str, Any]:
    script = Path(__file__).resolve().parent / "peer_post_office.py"
    completed = subprocess.run(
        [sys.executable, str(script), *arguments],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    raise RuntimeError(
        f"post_office step {arguments[0]} failed (exit {completed.returncode}):\n"
        f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    )
