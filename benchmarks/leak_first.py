"""What the short leak scan before accretion (``audit.accretion_leak_first``) finds and costs, per model of finished
scans: whether it ended the audit with a confirmed trigger, what the leaked user turns held, its seconds beside the
audit's. The planted trigger comes from each model's card (evaluation only), through the scan's own rows.

    python benchmarks/leak_first.py --scan SCANS/zoo-lf [--scan ...] --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, header  # noqa: E402


def rows(scan: Path) -> list[str]:
    """One table line per audited model of ``scan`` whose audit ran the leak scan first (a row per model is kept in
    ``rows/``, its run directory in ``runs/``)."""
    out = []
    for f in sorted((scan / "rows").glob("*.json")):
        row = json.loads(f.read_text())
        res = scan / "runs" / row["name"] / "result.json"
        if row.get("status") != "ok" or not res.is_file():
            continue
        r = json.loads(res.read_text())
        leak = r.get("data_scan") or {}
        if leak.get("source") != "leak" or "seconds" not in leak:
            continue  # an audit without the leak scan first (an explicit leak-scan, or one before it existed)
        ended = r.get("baseline") == "leak-scan"
        top = leak["top"][0]["ngram"] if leak.get("top") else None
        planted = ", ".join(cell(p) for p in row.get("planted") or []) or "-"
        verdict = cell(row["trigger"]) if row.get("trigger") else "-"
        out.append(f"| {row['name']} | {'poisoned' if row['poisoned'] else 'clean'} | {planted} | "
                   f"{leak['behaviour_rows']} of {leak['rows']} | {cell(top) if top else '-'} | "
                   f"{'yes' if ended else 'no'} | {leak['seconds'] / 60:.1f} | {row['minutes']:.1f} | "
                   f"{verdict} | "
                   f"{row['planted_recovered'] if row['poisoned'] else '-'} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", type=Path, action="append", required=True, help="a finished (or partial) scan dir")
    ap.add_argument("--note", default="", help="a paragraph under the table (what ran where)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    lines = ["# The leak scan before accretion", "", header("python " + " ".join(sys.argv)), "",
             "| model | label | planted (evaluation only) | leaked turns showing the behaviour | top n-gram | "
             "ended the audit | leak scan min | audit min | verdict | planted recovered |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for scan in a.scan:
        lines += rows(scan)
    a.out.write_text("\n".join(lines + ["", a.note] if a.note else lines) + "\n")
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
