"""manage.py search_index rebuild|sync|status: the FAISS index files (SEARCH["index"] = "faiss").

pgvector's HNSW indexes need no command: PostgreSQL keeps them in step (see ``manage.py vector_indexes``).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Rebuild, sync or list the FAISS vector indexes used when SEARCH['index'] is 'faiss'."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rebuild", "sync", "status"])

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from search_app import faiss_index
        except ImportError as error:
            raise CommandError(f"FAISS is not installed ({error}); pip install faiss-cpu") from None
        if options["action"] == "rebuild":
            for name, n, path in faiss_index.rebuild_all():
                self.stdout.write(f"{name}: {n} vectors -> {path}")
            return
        for vi in self._known(faiss_index):
            if options["action"] == "sync":
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
