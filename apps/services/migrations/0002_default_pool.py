from django.db import migrations


def create_default_pool(apps, schema_editor):
    Pool = apps.get_model("services", "Pool")
    Pool.objects.get_or_create(
        name="default",
        defaults={"description": "Used when a service or a task names no pool.",
                  "is_shared": True},
    )


class Migration(migrations.Migration):
    dependencies = [("services", "0001_initial")]

    operations = [migrations.RunPython(create_default_pool, migrations.RunPython.noop)]
