"""The "Building manager" and "Viewer" groups (portal/roles.py says what each may do)."""

from django.db import migrations


def create_roles(apps, schema_editor):
    from portal.roles import ensure_roles

    ensure_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0004_site_members"),
        ("events", "0002_endpoint_previous_secret"),
        ("subscriptions", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
