#!/usr/bin/env python
"""Contacts at scale: CSV import, tag pages, bulk tagging, tag counts, "A and not B".

Usage::

    DEBUG=1 .venv/bin/python scripts/devdb.py -- .venv/bin/python bench/bench_contacts.py
    ... bench/bench_contacts.py --smoke          # 20,000 contacts, seconds
    ... bench/bench_contacts.py --add-only --add-runs 9   # tagging 100,000 only: ~1 min

Workload (fixed seed): a CSV of N rows (1,000,000 ≈ 100 MB; ~2% bad rows: invalid
e-mail, wrong column count, bad UTF-8) imported with ``manage.py import_contacts`` in a
child process (wall time and the child's peak RSS); then 200 tags: tag A with N/2
members, tag B with N/10 (half inside A), 198 tags of ~N/100 each. Timed operations
run through the services/selectors and the HTTP API (DRF test client, in process).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, median, percentile, report, setup_django

FIRST = [
    "anna",
    "ben",
    "carla",
    "dmitri",
    "eva",
    "farid",
    "greta",
    "hugo",
    "ines",
    "jonas",
    "kira",
    "lars",
    "mona",
    "nils",
    "olga",
    "pavel",
    "quinn",
    "rosa",
    "sven",
    "tara",
]
LAST = [
    "meyer",
    "schmidt",
    "novak",
    "rossi",
    "garcia",
    "smith",
    "kowalski",
    "jensen",
    "dubois",
    "silva",
    "tanaka",
    "okafor",
    "nguyen",
    "larsen",
    "horvat",
    "costa",
]
CITIES = ["Berlin", "Lisbon", "Warsaw", "Oslo", "Madrid", "Vienna", "Prague", "Dublin"]
PLANS = ["free", "starter", "pro", "enterprise"]


def make_csv(path: Path, rows: int, seed: int = 42) -> int:
    """Write the benchmark CSV; returns the number of deliberately bad rows."""
    rnd = random.Random(seed)
    bad = 0
    with open(path, "wb") as out:
        out.write(b"email,first_name,last_name,city,plan,company,signed_up\n")
        lines = []
        for i in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            email = f"{first}.{last}.{i}@mail{i % 97}.example.com"
            kind = rnd.random()
            if kind < 0.01:
                email = email.replace("@", "_at_")
                bad += 1
            line = (
                f"{email},{first.title()},{last.title()},{rnd.choice(CITIES)},"
                f"{rnd.choice(PLANS)},Company {i % 5000} GmbH,"
                f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"
            ).encode()
            if 0.01 <= kind < 0.015:
                line += b",extra"
                bad += 1
            elif 0.015 <= kind < 0.02:
                line = line.replace(b"GmbH", b"Gmb\xff\xfe")
                bad += 1
            lines.append(line)
            if len(lines) == 10_000:
                out.write(b"\n".join(lines) + b"\n")
                lines = []
        if lines:
            out.write(b"\n".join(lines) + b"\n")
    return bad


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a local process has used, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class BackendWatcher(threading.Thread):
    """Follows the CPU time of the PostgreSQL backend serving ``application_name``.

    The machines are shared: wall-clock figures move with the neighbours' load, CPU
    seconds much less, so the import is reported both ways.
    """

    def __init__(self, app_name: str):
        super().__init__(daemon=True)
        self.app_name, self.cpu_s, self.stop = app_name, 0.0, threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
            pid = None
            while not self.stop.is_set():
                if pid is None:
                    row = conn.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        [self.app_name],
                    ).fetchone()
                    pid = row[0] if row else None
                if pid is not None:
                    self.cpu_s = max(self.cpu_s, process_cpu_s(pid))
                time.sleep(0.2)


def own_backend_cpu_s() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return process_cpu_s(cursor.fetchone()[0])


def timed(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
        status = getattr(result, "status_code", 200)
        assert status == 200, (status, getattr(result, "content", b"")[:300])
    return samples


def reset_owner(username: str):
    from django.contrib.auth import get_user_model
    from django.db import connection

    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is not None:
        with connection.cursor() as cursor:
            # Bulk delete in SQL: the ORM's cascade would load a million rows.
            cursor.execute(
                "DELETE FROM contacts_contacttag WHERE tag_id IN"
                " (SELECT id FROM contacts_tag WHERE owner_id = %s)",
                [user.pk],
            )
            cursor.execute("DELETE FROM contacts_tag WHERE owner_id = %s", [user.pk])
            cursor.execute("DELETE FROM contacts_contact WHERE owner_id = %s", [user.pk])
        user.delete()
    return User.objects.create_user(username=username, password="bench-pw")


def seed_contacts_sql(user, rows: int) -> None:
    """``rows`` contacts of ``user`` written in one SQL statement (for ``--add-only``)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO contacts_contact (owner_id, email, first_name, last_name, attributes,"
            " status, source, created_at, updated_at)"
            " SELECT %s, 'c' || g || '@example.com', 'Ada', 'Lovelace', '{}'::jsonb,"
            " 'active', 'import', now(), now() FROM generate_series(1, %s) AS g",
            [user.pk, rows],
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rows", type=int)
    parser.add_argument(
        "--add-only",
        action="store_true",
        help="seed the contacts in SQL (no CSV import) and time only adding/removing"
        " 100,000 contacts to/from a tag: a quick check of the tagging path",
    )
    parser.add_argument("--add-runs", type=int, default=5, help="adds (and removes) to time")
    args = parser.parse_args()
    rows = args.rows or (20_000 if args.smoke else 1_000_000)
    repeat = 20 if args.smoke else 100
    setup_django()

    from django.db import connection
    from django.test.utils import override_settings
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from apps.contacts.models import Contact, Tag
    from apps.contacts.selectors import ContactFilter, contact_count_matching
    from apps.contacts.services import ContactSelection, tag_add_contacts, tag_remove_contacts

    figures: dict = {"contacts": rows, "tags": 200}
    user = reset_owner("bench-contacts")
    if args.add_only:
        seed_contacts_sql(user, rows)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "contacts.csv"
            bad = make_csv(path, rows)
            figures["csv_mb"] = round(path.stat().st_size / 1e6, 1)
            figures["csv_bad_rows"] = bad
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "edm.settings"}
            command = [
                sys.executable,
                str(ROOT / "manage.py"),
                "import_contacts",
                str(path),
                "--owner",
                user.username,
                "--no-progress",
            ]
            watcher = BackendWatcher("edm-bench-import")
            watcher.start()
            started = time.perf_counter()
            subprocess.run(
                command,
                check=True,
                env={**env, "PGAPPNAME": "edm-bench-import"},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            elapsed = time.perf_counter() - started
            watcher.stop.set()
            watcher.join()
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            rss = usage.ru_maxrss / 1024
            figures["import_python_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
            figures["import_postgres_cpu_s"] = round(watcher.cpu_s, 1)
            figures["import_s"] = round(elapsed, 2)
            figures["import_rows_per_s"] = round(rows / elapsed)
            figures["import_peak_rss_mb"] = round(rss, 1)
            started = time.perf_counter()
            out = subprocess.run(
                command, check=True, env=env, cwd=ROOT, capture_output=True, text=True
            ).stdout
            elapsed = time.perf_counter() - started
            figures["reimport_rows_per_s"] = round(rows / elapsed)
            figures["reimport_summary"] = out.strip().splitlines()[0]
    stored = Contact.objects.filter(owner=user).count()
    figures["contacts_stored"] = stored

    # --- 200 tags (setup in SQL, counts then set from the real memberships) -------------
    tenth = stored // 10
    Tag.objects.bulk_create([Tag(owner=user, name=f"tag-{i:03d}") for i in range(200)])
    tags = list(Tag.objects.filter(owner=user).order_by("id"))
    tag_a, tag_b, tag_new = tags[0], tags[1], tags[2]
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_ids AS SELECT id, row_number() OVER (ORDER BY id) AS n"
            " FROM contacts_contact WHERE owner_id = %s",
            [user.pk],
        )
        cursor.execute(
            "INSERT INTO contacts_contacttag (tag_id, contact_id)"
            " SELECT %s, id FROM bench_ids WHERE n %% 2 = 0",
            [tag_a.pk],
        )
        cursor.execute(
            "INSERT INTO contacts_contacttag (tag_id, contact_id)"
            " SELECT %s, id FROM bench_ids WHERE n %% 10 IN (0, 5)"
            " AND n <= %s",
            [tag_b.pk, tenth * 10 // 2],
        )
        for i, tag in enumerate(tags[3:]):
            cursor.execute(
                "INSERT INTO contacts_contacttag (tag_id, contact_id)"
                " SELECT %s, id FROM bench_ids WHERE n %% 100 = %s",
                [tag.pk, i % 100],
            )
        cursor.execute(
            "UPDATE contacts_tag t SET contact_count = (SELECT count(*) FROM"
            " contacts_contacttag m WHERE m.tag_id = t.id) WHERE t.owner_id = %s",
            [user.pk],
        )
        cursor.execute("VACUUM ANALYZE contacts_contacttag")
        cursor.execute("VACUUM ANALYZE contacts_contact")
        cursor.execute(
            "SELECT count(*) FROM contacts_contacttag m JOIN contacts_tag t"
            " ON t.id = m.tag_id WHERE t.owner_id = %s",
            [user.pk],
        )
        figures["memberships"] = cursor.fetchone()[0]
    tag_a.refresh_from_db()
    figures["tag_a_members"] = tag_a.contact_count

    if not args.add_only:
        # --- tag pages through the API --------------------------------------------------------
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        with override_settings(DEBUG=False, ALLOWED_HOSTS=["testserver"]):
            url = f"/api/tags/{tag_a.pk}/contacts/"
            first = timed(lambda: client.get(url), repeat)
            body = client.get(url).json()
            assert len(body["results"]) == 50, body
            # A cursor about half-way through the tag (the 250,000th member for N = 1M).
            middle = tag_a.contact_count // 2
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT contact_id FROM contacts_contacttag WHERE tag_id = %s"
                    " ORDER BY contact_id DESC OFFSET %s LIMIT 1",
                    [tag_a.pk, middle],
                )
                pivot = cursor.fetchone()[0]
            from apps.contacts.api import deep_page_cursor

            deep_url = f"{url}?cursor={deep_page_cursor(pivot)}"
            deep = timed(lambda: client.get(deep_url), repeat)
            page = client.get(deep_url).json()["results"]
            assert len(page) == 50 and page[0]["id"] < pivot, page[:1]
            figures["tag_page_first_p50_ms"] = round(median(first), 2)
            figures["tag_page_first_p95_ms"] = round(percentile(first, 95), 2)
            figures["tag_page_deep_p50_ms"] = round(median(deep), 2)
            figures["tag_page_deep_p95_ms"] = round(percentile(deep, 95), 2)
            # The same pages without HTTP/DRF: the selector's SQL alone.
            from apps.contacts.selectors import contact_list

            members = contact_list(owner=user, filters=ContactFilter(tags=(tag_a.pk,)))
            sql_first = timed(lambda: list(members.order_by("-member_id")[:51]), repeat)
            sql_deep = timed(
                lambda: list(
                    members.filter(member_id__lt=pivot, id__lt=pivot).order_by("-member_id")[:51]
                ),
                repeat,
            )
            figures["tag_page_sql_first_p95_ms"] = round(percentile(sql_first, 95), 2)
            figures["tag_page_sql_deep_p95_ms"] = round(percentile(sql_deep, 95), 2)

            counts = timed(
                lambda: list(Tag.objects.filter(owner=user).values_list("id", "contact_count")),
                repeat,
            )
            figures["tag_counts_200_p50_ms"] = round(median(counts), 2)
            figures["tag_counts_200_p95_ms"] = round(percentile(counts, 95), 2)
            api_counts = timed(lambda: client.get("/api/tags/?page_size=200"), repeat // 2)
            figures["tag_list_api_200_p50_ms"] = round(median(api_counts), 2)

    # --- add 100,000 contacts to a tag ------------------------------------------------------
    batch = min(100_000, stored // 6)
    all_ids = list(Contact.objects.filter(owner=user).values_list("id", flat=True))
    random.Random(7).shuffle(all_ids)
    sets = len(all_ids) // batch  # more runs than disjoint sets reuse them in turn
    adds, removes, add_cpu = [], [], []
    for run in range(args.add_runs):
        # A fresh random set each run (as a real selection would be), so no run pays for
        # the dead index entries a previous run left on the same keys.
        ids = all_ids[(run % sets) * batch : (run % sets + 1) * batch]
        started, cpu = time.perf_counter(), own_backend_cpu_s()
        change = tag_add_contacts(tag=tag_new, selection=ContactSelection(ids=ids))
        adds.append((time.perf_counter() - started) * 1000)
        add_cpu.append((own_backend_cpu_s() - cpu) * 1000)
        assert change.changed == len(ids), change
        started = time.perf_counter()
        tag_remove_contacts(tag=tag_new, selection=ContactSelection(ids=ids))
        removes.append((time.perf_counter() - started) * 1000)
    figures["add_contacts"] = batch
    figures["add_contacts_p50_ms"] = round(median(adds), 1)
    figures["add_contacts_postgres_cpu_p50_ms"] = round(median(add_cpu), 1)
    figures["add_contacts_runs_ms"] = [round(ms) for ms in adds]
    figures["add_contacts_postgres_cpu_runs_ms"] = [round(ms) for ms in add_cpu]
    figures["remove_contacts_p50_ms"] = round(median(removes), 1)

    if not args.add_only:
        # --- tag A and not tag B ------------------------------------------------------------------
        filters = ContactFilter(tags=(tag_a.pk,), exclude_tags=(tag_b.pk,))
        result = contact_count_matching(owner=user, filters=filters)
        and_not = timed(
            lambda: contact_count_matching(owner=user, filters=filters), 5 if not args.smoke else 10
        )
        figures["a_and_not_b_count"] = result
        figures["a_and_not_b_p50_ms"] = round(median(and_not), 1)
        cpu = own_backend_cpu_s()
        contact_count_matching(owner=user, filters=filters)
        figures["a_and_not_b_postgres_cpu_ms"] = round((own_backend_cpu_s() - cpu) * 1000, 1)
        with override_settings(DEBUG=False, ALLOWED_HOSTS=["testserver"]):
            page_url = f"/api/contacts/?tag={tag_a.pk}&exclude_tag={tag_b.pk}"
            and_not_page = timed(lambda: client.get(page_url), repeat // 2)
            figures["a_and_not_b_first_page_p50_ms"] = round(median(and_not_page), 2)

    from django.core.management import call_command

    call_command("check_tag_consistency", "--owner", user.username)
    figures["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    name = "contacts" + ("_add" if args.add_only else "") + ("_smoke" if args.smoke else "")
    report(name, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
