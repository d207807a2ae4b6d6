"""``manage.py validate_deployment --to ADDRESS``: prove a deployment sends mail, end to end.

Steps, in order; the first that fails stops the run with a non-zero exit naming it
(``validate_deployment: step "pool" failed: …``):

1. ``database`` — PostgreSQL answers and every migration is applied;
2. ``configuration`` — the configuration loads and Django's system checks pass;
3. ``pool`` — the chosen pool (``--pool``, default the default pool) has enabled
   services whose passwords the encryption key can read;
4. ``dispatchers`` — a dispatcher loop holds a slot (the cluster runs); with
   ``--dispatch-here`` this command runs one itself for the test;
5. ``send`` — a real task of ``--messages`` messages (default 1) to ``--to`` (plus-addressed
   when more than one: ``name+2@domain``) is queued through the pool, and every message
   is sent within ``--timeout`` seconds; reports time to first send and throughput;
6. ``metrics`` — the Prometheus collectors read the database and the pool's
   ``edm_service_sends{outcome="sent"}`` totals moved by the messages sent.

The test task belongs to the ``--owner`` user (default: an inactive ``edm-validation``
account that cannot log in) and is named ``validate_deployment <time>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from django.utils import timezone

VALIDATION_USER = "edm-validation"


class StepFailed(Exception):
    pass


class Command(BaseCommand):
    help = "Check health, send a real test task through a pool, check metrics; exit 1 on a failure."

    def add_arguments(self, parser):
        parser.add_argument("--to", required=True, help="the address that receives the test")
        parser.add_argument("--pool", default=None, help="pool name or id (default: default)")
        parser.add_argument("--messages", type=int, default=1, help="messages to send (1-1000)")
        parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
        parser.add_argument("--owner", default=None, help="username the test task belongs to")
        parser.add_argument(
            "--dispatch-here",
            action="store_true",
            help="run a dispatcher loop in this process for the test (no cluster needed)",
        )

    def handle(self, *args, to, pool, messages, timeout, owner, dispatch_here, **options):
        if not 1 <= messages <= 1000:
            raise CommandError("--messages must be between 1 and 1000")
        if "@" not in to:
            raise CommandError(f"--to {to!r} is not an e-mail address")
        self.state: dict = {}
        steps: list[tuple[str, Callable[[], str]]] = [
            ("database", self._database),
            ("configuration", self._configuration),
            ("pool", lambda: self._pool(pool)),
            ("dispatchers", lambda: self._dispatchers(dispatch_here)),
            ("send", lambda: self._send(to, messages, timeout, owner)),
            ("metrics", self._metrics),
        ]
        try:
            for name, step in steps:
                try:
                    detail = step()
                except StepFailed as exc:
                    raise CommandError(
                        f'validate_deployment: step "{name}" failed: {exc}'
                    ) from None
                self.stdout.write(f"ok  {name:<13} {detail}")
        finally:
            dispatcher = self.state.get("dispatcher")
            if dispatcher is not None:
                dispatcher.stop()
        self.stdout.write("deployment validated")

    # --- steps ---------------------------------------------------------------------------

    def _database(self) -> str:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT version()")
                version = cursor.fetchone()[0].split(" on ")[0]
        except Exception as exc:  # noqa: BLE001 - any failure is the step's failure
            raise StepFailed(
                f"cannot query the database ({exc.__class__.__name__}: {exc})"
            ) from None
        plan = MigrationExecutor(connection).migration_plan(
            MigrationExecutor(connection).loader.graph.leaf_nodes()
        )
        if plan:
            raise StepFailed(f"{len(plan)} migration(s) not applied: run manage.py migrate")
        return version

    def _configuration(self) -> str:
        from apps.config.selectors import config_values

        try:
            values = config_values()
            call_command("check", stdout=_Null(), stderr=_Null())
        except Exception as exc:  # noqa: BLE001
            raise StepFailed(f"{exc.__class__.__name__}: {exc}") from None
        return f"{len(values)} keys, system checks pass"

    def _pool(self, ref) -> str:
        from apps.services.models import EmailService, Pool
        from apps.services.selectors import pool_resolve
        from apps.services.senders import sender_for

        try:
            pool = pool_resolve(ref)
        except Pool.DoesNotExist:
            raise StepFailed(f"no pool {ref or Pool.DEFAULT_NAME!r}") from None
        services = list(EmailService.objects.filter(pool=pool, is_enabled=True))
        if not services:
            raise StepFailed(f"pool {pool.name!r} has no enabled email service")
        for service in services:
            try:
                sender_for(service)
            except Exception as exc:  # noqa: BLE001 - an unreadable password, a bad kind
                raise StepFailed(f"service {service.name!r}: {exc}") from None
        self.state["pool"] = pool
        self.state["services"] = [s.pk for s in services]
        return f"{pool.name!r}: {len(services)} enabled service(s)"

    def _dispatchers(self, dispatch_here: bool) -> str:
        from apps.dispatch.engine.slots import slots_live

        if dispatch_here:
            self.state["dispatcher"] = _ThreadDispatcher().start()
            return "one loop in this process"
        live = slots_live()
        if not live:
            raise StepFailed("no dispatcher loop holds a slot: is the qcluster running?")
        return f"{live} loop(s) live"

    def _send(self, to: str, messages: int, timeout: float, owner_name) -> str:
        from apps.contacts.services import contacts_bulk_upsert
        from apps.dispatch import services as dispatch
        from apps.dispatch.models import SubTask
        from apps.services.models import EmailService

        owner = self._owner(owner_name)
        local, domain = to.rsplit("@", 1)
        addresses = [to] + [f"{local}+{n}@{domain}" for n in range(2, messages + 1)]
        rows = contacts_bulk_upsert(
            owner=owner, rows=[{"email": a} for a in addresses], tag_names=[]
        )
        before = sum(
            EmailService.objects.filter(pk__in=self.state["services"]).values_list(
                "total_sent", flat=True
            )
        )
        self.state["sent_before"] = before
        stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
        try:
            task = dispatch.task_create(
                owner=owner,
                name=f"validate_deployment {stamp}",
                subject=f"EDM deployment check {stamp}",
                body_text="This message checks that this EDM deployment sends mail.\n",
                contacts=[row["id"] for row in rows],
                pool=self.state["pool"],
            )
            started = time.monotonic()
            dispatch.task_queue(task=task)
        except Exception as exc:  # noqa: BLE001
            raise StepFailed(f"cannot queue the test task: {exc}") from None
        first = None
        subtasks = SubTask.objects.filter(task=task)
        deadline = started + timeout
        while time.monotonic() < deadline:
            sent = subtasks.filter(status="sent").count()
            if sent and first is None:
                first = time.monotonic() - started
            if sent == messages:
                elapsed = time.monotonic() - started
                self.state["sent"] = messages
                rate = messages / elapsed if elapsed > 0 else float("inf")
                return (
                    f"task {task.pk}: {messages} sent to {to}, first after {first:.2f} s, "
                    f"all after {elapsed:.2f} s ({rate:.1f} msg/s)"
                )
            failed = subtasks.exclude(status__in=["pending", "allocated", "sending", "sent"])
            if failed.exists():
                bad = failed.first()
                raise StepFailed(
                    f"task {task.pk}: {bad.to_email} is {bad.status}: {bad.last_error}"
                )
            time.sleep(0.2)
        counts = dict(subtasks.values_list("status").annotate(n=Count("id")))
        raise StepFailed(f"task {task.pk}: not sent within {timeout:.0f} s ({counts})")

    def _metrics(self) -> str:
        from prometheus_client import REGISTRY

        samples = {
            (sample.name, sample.labels.get("service", ""), sample.labels.get("outcome", "")): (
                sample.value
            )
            for metric in REGISTRY.collect()
            for sample in metric.samples
        }
        if samples.get(("edm_metrics_collector_up", "", "")) != 1:
            raise StepFailed("the database collector is down (edm_metrics_collector_up != 1)")
        from apps.services.models import EmailService

        names = EmailService.objects.filter(pk__in=self.state["services"]).values_list(
            "name", flat=True
        )
        total = sum(samples.get(("edm_service_sends_total", name, "sent"), 0) for name in names)
        moved = total - self.state["sent_before"]
        if moved < self.state["sent"]:
            raise StepFailed(
                f"edm_service_sends_total{{outcome=sent}} of the pool moved by {moved:.0f}, "
                f"expected {self.state['sent']}"
            )
        return f"edm_service_sends_total{{outcome=sent}} of the pool +{moved:.0f}"

    def _owner(self, username):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise StepFailed(f"no user {username!r}") from None
        user, created = User.objects.get_or_create(
            username=VALIDATION_USER, defaults={"is_active": False}
        )
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        return user


class _ThreadDispatcher:
    """One dispatcher loop in a thread of this process (slot-less: a test send)."""

    def __init__(self) -> None:
        import threading

        from apps.dispatch.engine.loop import Dispatcher

        self.dispatcher = Dispatcher(use_slot=False)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connections

        try:
            self.dispatcher.run()
        finally:
            connections.close_all()

    def start(self) -> _ThreadDispatcher:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.dispatcher.stop.set()
        self.thread.join(timeout=30)


class _Null:
    def write(self, *_):
        pass

    def flush(self):
        pass
