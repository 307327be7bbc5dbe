"""The Cataloger role: staff who describe and review the collection but cannot delete artworks or touch
accounts. Administrators are superusers and need no group."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

CATALOGER = "Cataloger"
CATALOGER_PERMISSIONS = {
    "artwork": ("add", "change", "view"),
    "artist": ("add", "change", "view"),
    "detail": ("add", "change", "view"),
    "processingstep": ("view",),
    "artworkembedding": ("view",),
    "detailembedding": ("view",),
}


def create_roles(apps, schema_editor):
    # Permissions are normally created after all migrations ran (post_migrate); on a fresh database they do not
    # exist yet, so create them now from the historical models.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=CATALOGER)
    codenames = [f"{action}_{model}" for model, actions in CATALOGER_PERMISSIONS.items() for action in actions]
    permissions = Permission.objects.filter(content_type__app_label="collections_app", codename__in=codenames)
    missing = set(codenames) - set(permissions.values_list("codename", flat=True))
    if missing:
        raise RuntimeError(f"Permissions missing for the Cataloger role: {sorted(missing)}")
    group.permissions.set(permissions)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=CATALOGER).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("collections_app", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_roles, remove_roles)]
