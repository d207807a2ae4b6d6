"""A change of a task's relations (its included and excluded tags, its contacts) writes
the task's row anew, so that the row's version stands for the relations too
(``selectors.owned_task_detail`` reads them again only when it changed). The row keeps
its content (``updated_at = updated_at``); a contact or tag deleted, whose cascade
removes relation rows, counts as a change. One statement-level trigger per event: a
trigger with transition tables serves one."""

from django.db import migrations

RELATIONS = ("dispatch_task_include_tags", "dispatch_task_exclude_tags", "dispatch_task_contacts")

FUNCTIONS = """
CREATE FUNCTION dispatch_task_relations_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE dispatch_task SET updated_at = updated_at
    WHERE id IN (SELECT task_id FROM changed_rows);
    RETURN NULL;
END $$;

CREATE FUNCTION dispatch_task_relations_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE dispatch_task SET updated_at = updated_at
    WHERE id IN (SELECT task_id FROM old_rows UNION SELECT task_id FROM new_rows);
    RETURN NULL;
END $$;
"""

TRIGGERS = "".join(
    f"""
CREATE TRIGGER {table}_version_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_task_relations_changed();
CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_task_relations_changed();
CREATE TRIGGER {table}_version_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dispatch_task_relations_updated();
"""
    for table in RELATIONS
)

DROP = "".join(
    f"DROP TRIGGER {table}_version_{event} ON {table};\n"
    for table in RELATIONS
    for event in ("insert", "delete", "update")
) + (
    "DROP FUNCTION dispatch_task_relations_changed();\n"
    "DROP FUNCTION dispatch_task_relations_updated();\n"
)


class Migration(migrations.Migration):
    dependencies = [
        ("dispatch", "0008_test_send"),
    ]

    operations = [migrations.RunSQL(FUNCTIONS + TRIGGERS, DROP)]
