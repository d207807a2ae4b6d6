from django.db import migrations

# Any write to config_systemconfig (service, admin, shell, raw SQL, loaddata) advances the
# version every process's cache watches, in the writer's transaction. One statement-level
# trigger on a table of a few dozen rows that changes a few times a day.
FORWARD = """
CREATE FUNCTION config_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO config_configversion (id, version, changed_at) VALUES (1, 1, now())
    ON CONFLICT (id) DO UPDATE
        SET version = config_configversion.version + 1, changed_at = now();
    RETURN NULL;
END
$$;
CREATE TRIGGER config_systemconfig_bump_version
    AFTER INSERT OR UPDATE OR DELETE ON config_systemconfig
    FOR EACH STATEMENT EXECUTE FUNCTION config_bump_version();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS config_systemconfig_bump_version ON config_systemconfig;
DROP FUNCTION IF EXISTS config_bump_version();
"""


class Migration(migrations.Migration):
    dependencies = [("config", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
