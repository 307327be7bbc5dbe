"""manage.py search_index rebuild|sync|status: the in-memory search indexes of large collections.

- FAISS vector indexes, when ``SEARCH["index"]`` is "faiss" (search_app.faiss_index);
- the BM25 word index, when ``SEARCH["text_index"]`` is "memory" (search_app.text_index).

Both are saved under SEMART_DATA_DIR/indexes and kept in step by the web processes between rebuilds.
pgvector's HNSW indexes need no command: PostgreSQL keeps them in step (see ``manage.py vector_indexes``).
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Rebuild, sync or list the FAISS vector indexes and the in-memory word index."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rebuild", "sync", "status"])
        parser.add_argument(
            "--only",
            choices=["faiss", "words"],
            help="one kind of index (default: those the settings choose, or both when they choose neither)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kinds = [options["only"]] if options["only"] else self._chosen()
        if "words" in kinds:
            self._words(options["action"])
        if "faiss" in kinds:
            self._faiss(options["action"])

    @staticmethod
    def _chosen() -> list[str]:
        chosen = []
        if settings.SEARCH.get("text_index") == "memory":
            chosen.append("words")
        if settings.SEARCH["index"] == "faiss":
            chosen.append("faiss")
        return chosen or ["words", "faiss"]

    def _words(self, action: str) -> None:
        from search_app import text_index

        if action == "rebuild":
            started = time.perf_counter()
            index = text_index.rebuild_and_save()
            artworks, details = index.size()
            self.stdout.write(
                f"words: {artworks} artworks, {details} details in {time.perf_counter() - started:.1f} s "
                f"-> {text_index.index_path()}"
            )
            return
        loaded = text_index.WordIndex.load()
        if loaded is None:
            self.stdout.write("words: not built (run `search_index rebuild`)")
            return
        if action == "sync":
            changed = loaded.sync()
            self.stdout.write(f"words: {changed} artworks changed since the build")
            return
        artworks, details = loaded.size()
        self.stdout.write(f"words: {artworks} artworks, {details} details -> {text_index.index_path()}")

    def _faiss(self, action: str) -> None:
        try:
            from search_app import faiss_index
        except ImportError as error:
            raise CommandError(f"FAISS is not installed ({error}); pip install faiss-cpu") from None
        if action == "rebuild":
            for name, n, path in faiss_index.rebuild_all():
                self.stdout.write(f"{name}: {n} vectors -> {path}")
            return
        for vi in self._known(faiss_index):
            if action == "sync":
                added, removed = vi.sync()
                vi.save()
                self.stdout.write(f"{vi.target} {vi.model_key} {vi.kind} {vi.dim}: +{added} -{removed}")
            else:
                total = vi.index.ntotal if vi.index is not None else 0
                self.stdout.write(f"{vi.target} {vi.model_key} {vi.kind} {vi.dim}: {total} vectors")

    @staticmethod
    def _known(faiss_index: Any) -> list[Any]:
        from django.db import connection

        out = []
        for target, table in faiss_index.TABLES.items():
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT DISTINCT model_key, kind, dim FROM {table}")
                for model_key, kind, dim in cursor.fetchall():
                    out.append(
                        faiss_index.get_index(target=target, model_key=model_key, kind=kind, dim=int(dim))
                    )
        return out
