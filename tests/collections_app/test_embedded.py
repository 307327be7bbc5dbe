"""The embedded-database switch: without DATABASE_URL the site runs its own PostgreSQL + pgvector."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from semart_site.embedded import embedded_postgres_settings

needs_embedded = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")), reason="DATABASE_URL is set: this run uses an external PostgreSQL"
)


@needs_embedded
@pytest.mark.django_db
def test_without_database_url_settings_point_at_the_embedded_server() -> None:
    db = settings.DATABASES["default"]
    # pgserver listens on a unix socket inside its data folder, under SEMART_DATA_DIR/postgres.
    assert Path(db["HOST"]).resolve().is_relative_to((settings.SEMART_DATA_DIR / "postgres").resolve())
    with connection.cursor() as cursor:
        cursor.execute("SELECT extname, extversion FROM pg_extension WHERE extname IN ('vector', 'pg_trgm')")
        versions = dict(cursor.fetchall())
        cursor.execute("SHOW server_version_num")
        server_version = int(cursor.fetchone()[0])
    assert set(versions) == {"vector", "pg_trgm"}
    assert tuple(int(p) for p in versions["vector"].split(".")[:2]) >= (0, 8)
    assert server_version >= 180000


def test_a_fresh_folder_gets_a_new_server_with_the_database(tmp_path: Path) -> None:
    import pgserver
    import psycopg

    data_dir = tmp_path / "fresh"
    db = embedded_postgres_settings(data_dir, database="semart_fresh")
    server = pgserver.get_server(data_dir / "postgres")
    try:
        assert (data_dir / "postgres" / "PG_VERSION").is_file()
        assert (data_dir / "postgres" / "postmaster.pid").is_file()
        with psycopg.connect(dbname=db["NAME"], user=db["USER"], host=db["HOST"]) as conn:
            # The extensions come from template1, so a database made later has them without a superuser step.
            rows = conn.execute("SELECT extname FROM pg_extension ORDER BY extname").fetchall()
            assert {"vector", "pg_trgm"} <= {r[0] for r in rows}
            assert conn.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector").fetchone()[0] > 0
        # Asking again for the same folder joins the running server and keeps the database.
        assert embedded_postgres_settings(data_dir, database="semart_fresh")["HOST"] == db["HOST"]
    finally:
        server.cleanup()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "the test's server was not stopped"
