#!/usr/bin/env bash
# Builds pgvector for the machine's PostgreSQL (Debian 12 ships PostgreSQL 15 without pgvector) from Debian
# trixie's source package, installs it, and creates the extensions in template1 so every new database (the
# test databases included) inherits them. Needs root. Then: DATABASE_URL=postgres://postgres@127.0.0.1/semart
set -euo pipefail
PG_CONFIG="${PG_CONFIG:-$(ls /usr/lib/postgresql/*/bin/pg_config | sort -V | tail -1)}"
PG_MAJOR="$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
if [[ -f "$("$PG_CONFIG" --sharedir)/extension/vector.control" ]]; then
  echo "pgvector already installed for PostgreSQL $PG_MAJOR"
else
  echo "deb-src http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/semart-trixie-src.list
  apt-get update -qq
  apt-get install -y -qq "postgresql-server-dev-$PG_MAJOR" build-essential dpkg-dev >/dev/null
  work="$(mktemp -d)"
  (cd "$work" && apt-get source --download-only pgvector >/dev/null && dpkg-source -x pgvector_*.dsc src >/dev/null \
    && make -C src PG_CONFIG="$PG_CONFIG" >/dev/null && make -C src PG_CONFIG="$PG_CONFIG" install >/dev/null)
  rm -rf "$work" /etc/apt/sources.list.d/semart-trixie-src.list
  apt-get update -qq || true
fi
for db in template1 postgres; do
  su postgres -c "psql -q -d $db -c 'CREATE EXTENSION IF NOT EXISTS vector; CREATE EXTENSION IF NOT EXISTS pg_trgm;'"
done
su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname='semart'\" | grep -q 1 || createdb semart"
su postgres -c "psql -q -d semart -tc \"SELECT extversion FROM pg_extension WHERE extname='vector'\""
