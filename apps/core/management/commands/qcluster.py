"""``manage.py qcluster``: django-q2's cluster, stopping cleanly at SIGTERM.

django-q2 1.11 stops in order only at SIGINT. At SIGTERM its sentinel process keeps the
default action and dies at once, so when the whole process group gets SIGTERM (docker,
systemd, Kubernetes) the pusher, the monitor and the idle workers die with it, a busy
worker is left blocked on a queue that nobody feeds or stops, and the main process waits
for them; when the main process alone gets SIGTERM, the sentinel stops in order but waits
for every worker's task — a dispatcher loop runs for minutes.

This command runs the same cluster with a sentinel that

* treats SIGTERM like the main process's stop request (the orderly stop: the pusher
  first, then a STOP for each worker, then the monitor), and lets the processes it
  forks ignore SIGTERM (it stops them in that order); and
* at the start of that stop sends SIGINT to its workers: a running dispatcher loop
  (``apps.dispatch.tasks.dispatcher_loop``) stops at it — messages on the wire finish
  and are recorded, claimed ones go back to the queue, no successor is enqueued — and an
  idle worker ignores it (q2 workers ignore SIGINT) and takes its STOP; and
* hands its stop event to the workers it forks (``apps.core.stopping``): a loop a
  worker takes after that SIGINT (queued ahead of its STOP) sees it and ends at once.

So every loop stops within seconds and every process of the node exits, whichever of
them the signal reached.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from django_q import cluster as q_cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from apps.core.stopping import cluster_stop_event_set

logger = logging.getLogger("edm.dispatch")


class GracefulSentinel(q_cluster.Sentinel):
    """django-q2's sentinel with the SIGTERM behaviour described in the module."""

    def start(self):
        # Installed before the workers, pusher and monitor are forked: they inherit it.
        # In a worker, a dispatcher loop puts its own handler in place while it runs.
        signal.signal(signal.SIGTERM, self._stop_requested)
        # Inherited too: a loop a worker takes after the SIGINT below still sees the stop.
        cluster_stop_event_set(self.stop_event)
        super().start()

    def _stop_requested(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            # A forked worker, pusher or monitor: the sentinel stops it in order (a
            # running dispatcher loop has its own handler meanwhile).
            return
        # Not stop_event.set() here: the handler may interrupt this very process inside
        # that event's lock (its guard loop waits on it), and the lock is not reentrant.
        threading.Thread(target=self.stop_event.set, name="edm-stop", daemon=True).start()

    def stop(self):
        if os.getpid() == self.pid:  # the sentinel itself, not a forked copy
            for process in list(self.pool):
                if process.is_alive():
                    try:
                        os.kill(process.pid, signal.SIGINT)
                    except ProcessLookupError:
                        pass
            logger.info("cluster stopping: asked %s worker(s) to end their tasks", len(self.pool))
        super().stop()


class Command(QClusterCommand):
    help = "Start a django-q2 cluster node (SIGTERM or SIGINT stop it cleanly)."

    def handle(self, *args, **options):
        # The cluster starts its sentinel by this module-level name.
        q_cluster.Sentinel = GracefulSentinel
        super().handle(*args, **options)
