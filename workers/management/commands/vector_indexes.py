"""Create the partial HNSW index for every (model, kind, dimension) that has stored vectors."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from collections_app.models import ArtworkEmbedding, DetailEmbedding
from collections_app.vector_indexes import ensure_hnsw_index


class Command(BaseCommand):
    help = "Create missing HNSW vector indexes (one per model_key, kind and dimension)."

    def handle(self, *args: Any, **options: Any) -> None:
        made = 0
        for target, model in (("artwork", ArtworkEmbedding), ("detail", DetailEmbedding)):
            combos = model.objects.values_list("model_key", "kind", "dim").distinct().order_by()
            for model_key, kind, dim in combos:
                name = ensure_hnsw_index(target=target, model_key=model_key, kind=kind, dim=dim)
                self.stdout.write(f"{name}\t{target}\t{model_key}\t{kind}\t{dim}")
                made += 1
        self.stdout.write(self.style.SUCCESS(f"{made} vector index(es) present."))
