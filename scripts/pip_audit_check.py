"""Dependency audit for scripts/test.sh: pip-audit over the installed environment, against PyPI's
vulnerability data. Fails on any known vulnerability not listed, with a reason, in .pip-audit-ignore.

Dependencies pip-audit could not look up (the vulnerability service unreachable, as on machines that reach
PyPI only through a package mirror) are reported loudly; they fail the run only with SEMART_AUDIT_STRICT=1,
so an offline machine can still run the tests while saying plainly that nothing was audited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORE_FILE = ROOT / ".pip-audit-ignore"


def ignored() -> dict[str, str]:
    """ID -> reason, from lines "ID  reason"; a line without a reason is an error, not a silent ignore."""
    found: dict[str, str] = {}
    if not IGNORE_FILE.exists():
        return found
    for number, line in enumerate(IGNORE_FILE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vuln_id, _, reason = line.partition(" ")
        if not reason.strip():
            sys.exit(f"{IGNORE_FILE.name} line {number}: {vuln_id} has no reason; say why it is ignored")
        found[vuln_id] = reason.strip()
    return found


def main() -> int:
    skip = ignored()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "audit.json"
        command = [
            str(Path(sys.executable).with_name("pip-audit")),
            "--skip-editable",
            "--progress-spinner",
            "off",
        ]
        command += ["--format", "json", "--output", str(report)]
        for vuln_id in skip:
            command += ["--ignore-vuln", vuln_id]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not report.exists():
            print(done.stdout + done.stderr, file=sys.stderr)
            return 2
        data = json.loads(report.read_text())
    vulnerable = [d for d in data["dependencies"] if d.get("vulns")]
    unaudited = [d for d in data["dependencies"] if d.get("skip_reason")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    for vuln_id, reason in skip.items():
        print(f"ignored {vuln_id}: {reason}")
    total = len(data["dependencies"])
    print(f"pip-audit: {total - len(unaudited)} of {total} packages audited, {len(vulnerable)} vulnerable")
    if unaudited:
        names = ", ".join(d["name"] for d in unaudited[:8]) + (" ..." if len(unaudited) > 8 else "")
        reason = unaudited[0]["skip_reason"]
        print(f"WARNING: {len(unaudited)} package(s) could not be audited ({names}); first reason: {reason}")
        if os.environ.get("SEMART_AUDIT_STRICT") == "1":
            return 1
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
