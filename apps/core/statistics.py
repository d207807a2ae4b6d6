"""Planner statistics after large writes.

After a bulk write PostgreSQL keeps planning with the old row estimates until autovacuum
analyzes the table, which can take minutes: a table it believes holds 88 rows is read as
if it did, by walking it whole instead of through an index (235-295 ms for a 51-row page
after importing 200,000 contacts, ~3 ms once analyzed). So the writer analyzes the tables
it grew, in the same job, when it added a large share of what the statistics know of.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection

# Analyze when a write added at least this many rows and more than this share of them.
MIN_ROWS = 1000
MIN_SHARE = 0.1


def tables_analyze_if_grown(*, tables: Sequence[str], added: int) -> list[str]:
    """``ANALYZE`` each of ``tables`` (names from the code, never from input) to which
    ``added`` rows were just added, if that is at least :data:`MIN_ROWS` and more than
    :data:`MIN_SHARE` of the rows its statistics know of. ANALYZE reads a sample (30,000
    rows) and blocks no writer. Returns the tables analyzed. Run it after the commit."""
    if added < MIN_ROWS:
        return []
    analyzed = []
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
            known = cursor.fetchone()[0]
            if known <= 0 or added > MIN_SHARE * known:
                cursor.execute(f'ANALYZE "{table}"')
                analyzed.append(table)
    return analyzed
