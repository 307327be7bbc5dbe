"""Runs `manage.py evaluate` on art-dev for the ablations of docs/evaluation.md and prints one JSON summary.

    SEMART_DATA_DIR=... DJANGO_SETTINGS_MODULE=semart_site.settings.local \
        .venv/bin/python benchmarks/search_ablations.py [--dataset ../shared/datasets/art-dev] [--out DIR]

Needs art-dev imported and processed in that instance (import_images ... --catalog ... --wait).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "semart_site.settings.local")

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_rerank": ["--no-rerank"],
    "alpha_0.0": ["--alpha", "0.0"],
    "alpha_0.25": ["--alpha", "0.25"],
    "alpha_0.75": ["--alpha", "0.75"],
    "alpha_1.0": ["--alpha", "1.0"],
    "no_iconclass": ["--no-iconclass"],
    "no_lexical": ["--no-lexical"],
    "pixels_only": ["--no-lexical", "--no-iconclass"],
    "pixels_only_no_rerank": ["--no-lexical", "--no-iconclass", "--no-rerank"],
    "details_level": ["--level", "details"],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "art-dev")
    parser.add_argument("--out", type=Path, default=None, help="keep each variant's --json here")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    args = parser.parse_args()

    import django

    django.setup()
    from django.core.management import call_command

    out_dir = args.out or Path(tempfile.mkdtemp(prefix="semart-eval-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {}
    for name, extra in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        target = out_dir / f"{name}.json"
        started = time.perf_counter()
        call_command(
            "evaluate",
            "--queries",
            str(args.dataset / "queries.jsonl"),
            "--qrels",
            str(args.dataset / "qrels.tsv"),
            "--regions",
            str(args.dataset / "qrels_regions.jsonl"),
            "--json",
            str(target),
            *extra,
            stdout=io.StringIO(),
        )
        result = json.loads(target.read_text())
        row: dict[str, object] = {"seconds": round(time.perf_counter() - started, 1)}
        for split in ("held_out", "all"):
            for group, entry in result["metrics"][split].items():
                cell = {
                    m: [
                        round(entry[m]["mean"], 3),
                        [round(x, 3) for x in entry[m]["ci95"]],
                        round(entry[m]["random"], 3),
                    ]
                    for m in ("ndcg@10", "ap", "recall@24", "mrr")
                }
                cell["n"] = entry["queries"]
                if "region_hit@10" in entry:
                    cell["region_hit@10"] = round(entry["region_hit@10"]["mean"], 3)
                row[f"{split}/{group}"] = cell
        summary[name] = row
        print(f"{name}: {row['seconds']} s", file=sys.stderr)
    summary["settings"] = result["settings"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
