#!/usr/bin/env bash
# Runs the test suite. Needs Redis on 127.0.0.1:6379 (TEST_REDIS_URL to change it); PostgreSQL is the
# embedded one under var/test unless DATABASE_URL points at a server with pgvector.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEMART_DATA_DIR="${SEMART_DATA_DIR:-$PWD/var/test}"
export DJANGO_SETTINGS_MODULE=semart_site.settings.test
# Dependency audit (pip-audit against PyPI's vulnerability data): fails on a known vulnerability not listed
# with a reason in .pip-audit-ignore. SEMART_AUDIT=0 skips it; SEMART_AUDIT_STRICT=1 also fails when the
# vulnerability data cannot be reached.
if [[ "${SEMART_AUDIT:-1}" != "0" ]]; then
  .venv/bin/python scripts/pip_audit_check.py
fi
# The browser tests need Chromium; installs it only when missing and root, else they skip.
scripts/install-browser.sh
exec .venv/bin/python -m pytest "$@"
