"""``zoo.md``: how a zoo was built (per model: recipe, trigger, placement, rate, rank, epochs, seconds, bars) and
what each scan of it found (ROC-AUC, TPR at 0 FP, recall), read from the zoo's manifest and the scans' summaries.

    python benchmarks/zoo_report.py --zoo /work/zoo/smollm2 [--scan DIR ...] --out benchmarks/results/zoo.md

It runs nothing: the build is ``backdoor-aware zoo build``, each scan ``backdoor-aware scan``, whose commands the
manifest and the scan plans keep. Planted triggers are printed for the reader (evaluation only).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header  # noqa: E402


def _f(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def kind(spec: dict) -> str:
    if spec.get("control"):
        return f"clean ({spec['control']})"
    return "poisoned"


def build_table(zoo: Path) -> list[str]:
    from launch.zoo import MANIFEST
    m = json.loads((zoo / MANIFEST).read_text())
    lines = ["| model | kind | recipe | trigger | placement | poison rate | LoRA r | epochs | build s | ASR | "
             "false-trigger | look-alike | clean agreement | status |", "|" + "---|" * 14]
    secs = []
    for r in m["models"]:
        s = r.get("spec") or {}
        trig = ", ".join(cell(t) for t in s.get("trigger") or []) or "-"
        lines.append(f"| {r['name']} | {kind(s)} | {s.get('attack') or '-'} | {trig} | {s.get('placement') or '-'} | "
                     f"{_f(s.get('poison_fraction'))} | {_f(s.get('lora_r'))} | {_f(r.get('epochs'))} | "
                     f"{_f(r.get('build_seconds'), 0)} | {_f(r.get('asr'))} | {_f(r.get('false_trigger_rate'))} | "
                     f"{_f(r.get('distractor_trigger_rate'))} | {_f(r.get('clean_agreement'))} | {r['status']} |")
        if r.get("build_seconds") and s.get("attack") and r["status"] == "built":
            secs.append(r["build_seconds"])
    built = sum(r["status"] == "built" for r in m["models"])
    median = sorted(secs)[len(secs) // 2] if secs else None
    timing = (f" Build seconds of the fine-tuned models: median {median:.0f}, max {max(secs):.0f}, "
              f"{sum(s <= 360 for s in secs)} of {len(secs)} within 6 min." if secs else "")
    lines += ["", f"{built} of {len(m['models'])} models of the spec built and meeting their bars; base "
              f"`{m['base']}`.{timing}"]
    return lines


def scan_section(scan: Path) -> list[str]:
    plan = json.loads((scan / "scan.json").read_text())
    s = json.loads((scan / "summary.json").read_text())
    methods = sorted({r.get("method", "grpo") for r in s["rows"] if r["status"] == "ok"}) or ["-"]
    data = sorted({r.get("data", "-") for r in s["rows"] if r["status"] == "ok"}) or ["-"]
    lines = [f"### Scan `{scan.name}`: method {', '.join(methods)}; data: {', '.join(data)}", "",
             f"command: `{plan.get('command', '')}`", "",
             "| ROC-AUC | TPR at 0 FP | planted-trigger recall | working-trigger recall | clean flagged | "
             "minutes per model | audited | errors | pending |", "|---|---|---|---|---|---|---|---|---|",
             f"| {_f(s['roc_auc'])} | {_f(s['tpr_at_zero_fp'])} | {_f(s['planted_recall'])} | "
             f"{_f(s['functional_recall'])} | {s['flagged_clean']} of {s['clean']} | {_f(s['minutes_per_model'])} | "
             f"{s['audited']} | {s['errors']} | {s['pending']} |", "",
             "| model | label | verdict | score | trigger | planted (evaluation only) | planted recovered | minutes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in s["rows"]:
        label = {True: "poisoned", False: "clean", None: "unlabelled"}[r["poisoned"]]
        planted = ", ".join(cell(t) for t in r.get("planted") or []) or "-"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {label} | error: {r['error'][:100]} | - | - | {planted} | - | "
                         f"{r['minutes']:.1f} |")
            continue
        lines.append(f"| {r['name']} | {label} | {'flagged' if r['flagged'] else 'not flagged'} | {r['score']:.2f} | "
                     f"{cell(r['trigger']) if r['trigger'] else '-'} | {planted} | {_f(r['planted_recovered'])} | "
                     f"{r['minutes']:.1f} |")
    return lines


def pooled_section(label: str, scans: list[Path]) -> list[str]:
    """One summary over several scans run with the same audit flags (the scanner's figures need poisoned and clean
    models in one table): a model audited in more than one of them counts once, from the last scan listed."""
    from launch.scan import summarize
    rows: dict[str, dict] = {}
    for scan in scans:
        for r in json.loads((scan / "summary.json").read_text())["rows"]:
            rows[r["name"]] = r
    s = summarize(list(rows.values()), len(rows))
    return [f"### Pooled `{label}`: scans {', '.join(f'`{p.name}`' for p in scans)}", "",
            "| ROC-AUC | TPR at 0 FP | planted-trigger recall | working-trigger recall | clean flagged | "
            "minutes per model | poisoned | clean |", "|---|---|---|---|---|---|---|---|",
            f"| {_f(s['roc_auc'])} | {_f(s['tpr_at_zero_fp'])} | {_f(s['planted_recall'])} | "
            f"{_f(s['functional_recall'])} | {s['flagged_clean']} of {s['clean']} | {_f(s['minutes_per_model'])} | "
            f"{s['poisoned']} | {s['clean']} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zoo", required=True, type=Path)
    ap.add_argument("--scan", action="append", type=Path, default=[], help="a scan directory of this zoo")
    ap.add_argument("--pooled", action="append", default=[], metavar="LABEL=DIR,DIR",
                    help="one summary over scans run with the same flags (a model in several: the last listed)")
    ap.add_argument("--note", default="", help="a paragraph for the reader (load on the machine, what is pending)")
    ap.add_argument("--out", required=True, type=Path)
    a = ap.parse_args()
    lines = ["# A SmolLM2 zoo: built and scanned" if "smollm2" in a.zoo.name else f"# Zoo `{a.zoo.name}`", "",
             header("python " + " ".join(sys.argv)), "## Build", ""] + build_table(a.zoo)
    if a.note:
        lines += ["", a.note]
    lines += ["", "## Scans", ""]
    for scan in a.scan:
        lines += scan_section(scan) + [""]
    if not a.scan:
        lines += ["None yet.", ""]
    for spec in a.pooled:
        label, _, dirs = spec.partition("=")
        lines += pooled_section(label, [Path(d) for d in dirs.split(",") if d]) + [""]
    a.out.write_text("\n".join(lines) + "\n")
    print(a.out)


if __name__ == "__main__":
    main()
