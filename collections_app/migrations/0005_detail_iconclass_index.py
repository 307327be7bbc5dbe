"""A GIN index on the details' ICONCLASS notations, for the ICONCLASS leg of the search
(search_app.retrieval.iconclass_leg): without it every query scanned every detail (~0.1 s at 1M details).
Built CONCURRENTLY so a large catalogue keeps taking writes while it builds."""

import django.contrib.postgres.indexes
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("collections_app", "0004_trigram_search_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="detail",
            index=django.contrib.postgres.indexes.GinIndex(fields=["iconclass"], name="detail_iconclass"),
        ),
    ]
