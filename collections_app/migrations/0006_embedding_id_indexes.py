"""Indexes holding each model's embedding ids, for FAISS's syncs (search_app.faiss_index): the count of a
model's rows, and the list of their ids, read from the index alone. At 1M details the count was a parallel
sequential scan of the vectors' table, ~0.5 s of both cores in every web process's first sync; from the
index, ~40-80 ms. Built CONCURRENTLY so a large catalogue keeps taking writes while it builds."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("collections_app", "0005_detail_iconclass_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="artworkembedding",
            index=models.Index(fields=["model_key", "kind", "dim", "id"], name="artwork_embedding_ids"),
        ),
        AddIndexConcurrently(
            model_name="detailembedding",
            index=models.Index(fields=["model_key", "kind", "dim", "id"], name="detail_embedding_ids"),
        ),
    ]
