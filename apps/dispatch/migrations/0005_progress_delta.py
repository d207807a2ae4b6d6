from django.db import migrations, models

# Frozen here (a later status needs a migration that adds its column and redefines these).
STATUSES = (
    "pending",
    "allocated",
    "sending",
    "sent",
    "failed",
    "dead",
    "skipped",
    "cancelled",
    "unknown",
)
COLUMNS = ", ".join(STATUSES)


def _sums(sign: str) -> str:
    return ", ".join(f"{sign}count(*) FILTER (WHERE status = '{s}')" for s in STATUSES)


SIGNED_SUMS = ", ".join(f"coalesce(sum(n) FILTER (WHERE status = '{s}'), 0)" for s in STATUSES)
ANY_CHANGE = " OR ".join(f"sum(n) FILTER (WHERE status = '{s}') <> 0" for s in STATUSES)

# One row per task a statement changed, from the statement's transition tables (see
# ``models.ProgressDelta``). Three triggers: a trigger with transition tables serves one
# event.
TRIGGERS = f"""
CREATE FUNCTION dispatch_progress_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dispatch_progressdelta (task_id, {COLUMNS})
    SELECT task_id, {_sums("")} FROM new_rows GROUP BY task_id;
    RETURN NULL;
END $$;

CREATE FUNCTION dispatch_progress_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dispatch_progressdelta (task_id, {COLUMNS})
    SELECT task_id, {SIGNED_SUMS}
    FROM (SELECT task_id, status, -1 AS n FROM old_rows
          UNION ALL
          SELECT task_id, status, 1 FROM new_rows) AS changes
    GROUP BY task_id
    HAVING {ANY_CHANGE};
    RETURN NULL;
END $$;

CREATE FUNCTION dispatch_progress_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dispatch_progressdelta (task_id, {COLUMNS})
    SELECT task_id, {_sums("-")} FROM old_rows GROUP BY task_id;
    RETURN NULL;
END $$;

CREATE TRIGGER dispatch_subtask_progress_insert AFTER INSERT ON dispatch_subtask
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_progress_inserted();
CREATE TRIGGER dispatch_subtask_progress_update AFTER UPDATE ON dispatch_subtask
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_progress_updated();
CREATE TRIGGER dispatch_subtask_progress_delete AFTER DELETE ON dispatch_subtask
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_progress_deleted();

-- The subtasks already there, counted in the same transaction as the triggers' creation
-- (which locks the table against writers until commit).
INSERT INTO dispatch_progressdelta (task_id, {COLUMNS})
SELECT task_id, {_sums("")} FROM dispatch_subtask GROUP BY task_id;
"""

DROP_TRIGGERS = """
DROP TRIGGER dispatch_subtask_progress_insert ON dispatch_subtask;
DROP TRIGGER dispatch_subtask_progress_update ON dispatch_subtask;
DROP TRIGGER dispatch_subtask_progress_delete ON dispatch_subtask;
DROP FUNCTION dispatch_progress_inserted();
DROP FUNCTION dispatch_progress_updated();
DROP FUNCTION dispatch_progress_deleted();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("dispatch", "0004_task_subtask_id_floor"),
    ]

    operations = [
        migrations.CreateModel(
            name="ProgressDelta",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("task_id", models.BigIntegerField(db_index=True)),
                *[(status, models.BigIntegerField(db_default=0)) for status in STATUSES],
            ],
        ),
        migrations.RunSQL(TRIGGERS, DROP_TRIGGERS),
    ]
