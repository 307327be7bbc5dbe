#!/usr/bin/env bash
# Creates .venv and installs Semart with its test and model extras. Safe to re-run: it reinstalls only
# when pyproject.toml changed since the last install. Then makes sure the embedded PostgreSQL's pgvector
# runs on this CPU (scripts/portable_pgvector.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${SEMART_VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
EXTRAS="${SEMART_EXTRAS:-test,ml,bench}"
stamp="$VENV/.semart-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" scripts/portable_pgvector.py
