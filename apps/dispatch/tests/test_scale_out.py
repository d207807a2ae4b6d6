"""Scale-out: two ``qcluster`` nodes (two processes, each with its own worker) on one
PostgreSQL through a real PgBouncer in transaction mode, as the compose file runs them
(``EDM_DATABASE_POOLER=transaction``). The dispatch invariants hold across the nodes,
each running a loop: every recipient once, rate limits kept, and a node killed
(SIGKILL) mid-send loses nothing — the other node and recovery finish its work.

PgBouncer is Debian's ``pgbouncer`` (``make system-tools`` installs it where it runs as
root with apt-get); the test skips, saying so, where it is missing.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import Counter
from datetime import timedelta
from pathlib import Path

import psutil
import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from apps.dispatch.models import DispatcherSlot, SubTask
from apps.dispatch.recovery import recover_stuck
from apps.dispatch.selectors import task_progress
from apps.dispatch.tests.helpers import queue_task, spawn_qcluster, wait_until
from apps.dispatch.tests.smtp import SlowHandler, start, start_latency_process

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RATE = 0.2  # seconds between two sends of the rate-limited service
RECIPIENTS = 1000  # at most ~85/s through the four services: several seconds of sending


def _pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer",) if os.access(p, os.X_OK)), None
    )


def _server_account(host: str) -> pwd.struct_passwd:
    """The system user owning the server's socket folder when the host is one, else
    ``postgres``."""
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid)
        if owner.pw_uid != 0:
            return owner
    return pwd.getpwnam("postgres")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PgBouncer:
    """A PgBouncer in transaction mode in front of the test database's server. It
    refuses to run as root: as root it runs as the system user the test's PostgreSQL
    runs as, who can reach that server's socket folder (``postgres`` for the installed
    server, ``pgserver`` for the embedded one)."""

    def __init__(self, binary: str) -> None:
        db = connection.settings_dict
        self.database = db["NAME"]
        self.user = db.get("USER") or "postgres"
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="edm-pgbouncer-"))
        server = f"host={db.get('HOST') or '127.0.0.1'}" + (
            f" port={db['PORT']}" if db.get("PORT") else ""
        )
        (self.folder / "users.txt").write_text(f'"{self.user}" "{db.get("PASSWORD") or ""}"\n')
        (self.folder / "pgbouncer.ini").write_text(
            f"""[databases]
* = {server}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder}/users.txt
admin_users = {self.user}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 40
ignore_startup_parameters = extra_float_digits,options
logfile = {self.folder}/pgbouncer.log
pidfile = {self.folder}/pgbouncer.pid
"""
        )
        command = [binary, str(self.folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            account = _server_account(db.get("HOST") or "")
            os.chown(self.folder, account.pw_uid, account.pw_gid)
            for path in self.folder.iterdir():
                os.chown(path, account.pw_uid, account.pw_gid)
            command = ["runuser", "-u", account.pw_name, "--", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(self._answers, timeout=15, message="PgBouncer to accept connections")
        except AssertionError as error:
            log = self.folder / "pgbouncer.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            self.stop()
            raise AssertionError(f"{error}; its log ends:\n{tail}") from None

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.process.stderr.read()
        try:
            psycopg.connect(self.url, connect_timeout=2, prepare_threshold=None).close()
        except psycopg.OperationalError:
            return False
        return True

    def transactions(self) -> int:
        """Transactions PgBouncer has passed to the test database (its ``SHOW STATS``;
        the admin console speaks the simple query protocol only)."""
        admin = psycopg.connect(
            f"postgresql://{self.user}@127.0.0.1:{self.port}/pgbouncer", autocommit=True
        )
        try:
            result = admin.pgconn.exec_(b"SHOW STATS")
            names = [result.fname(i).decode() for i in range(result.nfields)]
            for row in range(result.ntuples):
                values = dict(
                    zip(
                        names,
                        (result.get_value(row, i) for i in range(result.nfields)),
                        strict=True,
                    )
                )
                if values["database"].decode() == self.database:
                    return int(values["total_xact_count"])
        finally:
            admin.close()
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def pgbouncer():
    binary = _pgbouncer_binary()
    if binary is None:
        pytest.skip(
            "no pgbouncer on this machine: install Debian's pgbouncer "
            "(make system-tools does so where it runs as root with apt-get)"
        )
    bouncer = PgBouncer(binary)
    yield bouncer
    bouncer.stop()


def _node_of(pid: int, nodes: list[subprocess.Popen]) -> int | None:
    """Which node (index) a loop's process belongs to: its q2 worker is a descendant."""
    try:
        ancestors = {p.pid for p in psutil.Process(pid).parents()}
    except psutil.NoSuchProcess:
        return None
    return next((i for i, node in enumerate(nodes) if node.pid in ancestors), None)


def _stop(node: subprocess.Popen) -> None:
    if node.poll() is not None:
        return
    os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait()


def test_two_cluster_nodes_behind_pgbouncer_send_each_recipient_once_and_survive_a_kill(
    user, make_contacts, make_service, set_config, pgbouncer
):
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    set_config(
        queue__dispatchers=1, queue__concurrency=2, queue__batch_size=8, queue__lease_seconds=5
    )
    make_contacts(user, RECIPIENTS)
    sink = start(SlowHandler(delay=0.03))
    # The rate-limited service's server in a process of its own: the receive times that
    # prove its rate are not held up by the test process (late_by: how late it noted).
    rated_sink = start_latency_process(0.01)
    rated_received: list = []
    nodes: list[subprocess.Popen] = []
    try:
        for i in range(3):
            make_service(port=sink.port, name=f"fast{i}", sending_rate=0.05)
        limited = make_service(port=rated_sink.port, name="limited", sending_rate=RATE)
        through_bouncer = dict(
            DATABASE_URL=pgbouncer.url, EDM_DATABASE_POOLER="transaction", EDM_Q_WORKERS="1"
        )
        seen: list = []

        def loops_by_node() -> Counter:
            pids = DispatcherSlot.objects.filter(expires_at__gt=timezone.now()).values_list(
                "pid", flat=True
            )
            return Counter(_node_of(pid, nodes) for pid in pids)

        # Node 0 starts the one loop wanted and runs it on its one worker.
        nodes.append(spawn_qcluster(**through_bouncer))
        wait_until(lambda: loops_by_node()[0] == 1, timeout=60, message="a loop on node 0")
        # q2 nodes take queued work greedily (a local queue, and one more in hand): two
        # placeholders fill node 0's, so that the second loop can only go to node 1.
        for _ in range(2):
            async_task("time.sleep", 0)
        wait_until(
            lambda: not OrmQ.objects.filter(lock__lt=timezone.now() - timedelta(seconds=60)),
            timeout=30,
            message="node 0 to take the placeholders",
        )
        set_config(queue__dispatchers=2)
        nodes.append(spawn_qcluster(**through_bouncer))
        wait_until(lambda: loops_by_node()[1] == 1, timeout=60, message="a loop on node 1")
        task = queue_task(user)

        def both_nodes_send() -> bool:
            running = loops_by_node()
            seen[:] = [running, task_progress(task)["sent"]]
            return running[0] >= 1 and running[1] >= 1 and task_progress(task)["sent"] >= 30

        try:
            wait_until(both_nodes_send, timeout=60, message="a loop sending on each node")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: nodes with a loop, progress, exits: {seen}") from None
        os.killpg(nodes[0].pid, signal.SIGKILL)
        nodes[0].wait(timeout=10)

        def finished() -> bool:
            recover_stuck()
            progress = task_progress(task)
            assert sum(v for k, v in progress.items() if k != "total") == progress["total"]
            return progress["pending"] + progress["allocated"] + progress["sending"] == 0

        wait_until(finished, timeout=90, interval=0.5, message="the other node to finish")
        assert nodes[1].poll() is None, "the other node kept running"
        progress = task_progress(task)
        transactions = pgbouncer.transactions()
    finally:
        for node in nodes:
            _stop(node)
        sink.stop()
        rated_received = rated_sink.stop()

    assert transactions > 100, "the nodes went through PgBouncer"
    # At most one message per open SMTP connection of the killed node was on the wire.
    assert progress["unknown"] <= 2
    assert progress["sent"] + progress["unknown"] == RECIPIENTS
    received = Counter(m.rcpt_tos[0] for m in sink.handler.messages)
    received.update(rcpt_tos[0] for _, rcpt_tos, _ in rated_received)
    assert max(received.values()) == 1, "a recipient got a message twice"
    sent = set(SubTask.objects.filter(task=task, status="sent").values_list("to_email", flat=True))
    assert sent <= set(received)
    times = sorted(at for sender, _, at in rated_received if sender == limited.from_email)
    assert len(times) >= 2
    for a, b in itertools.pairwise(times):
        assert b - a >= RATE - 0.005 - rated_sink.late_by(a), (b - a, rated_sink.late_by(a))
