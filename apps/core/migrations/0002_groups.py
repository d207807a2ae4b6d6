"""The ``operators`` and ``tenants`` groups with their permissions (see ``apps.core.tenancy``).

It depends on no app whose permissions it grants: migrating one of those apps back and
forth must not unapply it. Permissions of models not migrated yet when it runs are added
by ``groups_ensure`` after ``migrate`` (``apps.core.apps``).
"""

from __future__ import annotations

from django.db import migrations


def create_groups(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    from apps.core.tenancy import groups_ensure

    # Permissions are normally created after ``migrate`` (post_migrate): create them now
    # so the groups receive them on a fresh database too.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    groups_ensure(
        group_model=apps.get_model("auth", "Group"),
        permission_model=apps.get_model("auth", "Permission"),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("core", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, migrations.RunPython.noop)]
