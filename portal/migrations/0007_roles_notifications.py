"""Roles see notification rules and notifications; building managers manage their sites' rules."""

from django.db import migrations


def update_roles(apps, schema_editor):
    from portal.roles import ensure_roles

    ensure_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0006_alarm_changes"),
        ("subscriptions", "0002_notifications"),
    ]

    operations = [migrations.RunPython(update_roles, migrations.RunPython.noop)]
