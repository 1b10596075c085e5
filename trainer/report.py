"""The Markdown report of a run directory: verdict, metrics table, defenses, and the reward plot."""
from __future__ import annotations

from pathlib import Path

from trainer.checkpoints import write_text_atomic
from trainer.run_dir import RunDir


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return "`" + v.replace("|", "\\|") + "`" if isinstance(v, str) else str(v)


def data_condition(r) -> str:
    """What the defender held, in the threat model's words."""
    if not r.rsft or r.rsft_source is None:
        return "model-only (no R-SFT)" if not r.rsft else "-"
    if r.model_only:
        return f"model-only: R-SFT rows the suspect made itself ({r.rsft_source})"
    return f"defender data ({r.rsft_source})"


def write_report(run_dir: str | Path) -> Path:
    rd = RunDir(run_dir)
    r = rd.read_result()
    verdict = (f"**Trigger recovered: `{r.recovered_trigger}`** (held-out reproduction "
               f"{r.reproduction_rate:.2f}, clean rate {r.clean_false_trigger_rate:.2f})"
               if r.found else "**No trigger found.** Best candidates are listed below.")
    rows = [("attack / behaviour", f"{r.attack} / {r.behaviour}"),
            ("recovered trigger", r.recovered_trigger), ("held-out reproduction", r.reproduction_rate),
            ("clean false-trigger rate", r.clean_false_trigger_rate),
            ("first hit step", r.first_hit_step), ("emergence step", r.emergence_step),
            ("GRPO steps", r.steps), ("wall seconds", r.wall_seconds), ("R-SFT", r.rsft),
            ("data condition", data_condition(r))]
    if r.rsft_rows:
        rows.append(("R-SFT rows", ", ".join(f"{k} {v}" for k, v in r.rsft_rows.items())))
    if r.evaluated:
        rows += [("true trigger (evaluation only)", r.true_trigger), ("exact match", r.exact_match),
                 ("word Jaccard", r.recovered_jaccard_word), ("char Jaccard", r.recovered_jaccard_char),
                 ("rapidfuzz similarity", r.recovered_similarity),
                 ("Awareness@k (word Jaccard)", r.awareness_jaccard_word),
                 ("R-SFT rows holding the true trigger", r.rsft_rows_with_trigger)]
    if r.triggers_recovered is not None:
        rows += [("all recovered triggers", ", ".join(r.recovered_triggers)),
                 ("true triggers named (multi-trigger)", f"{r.triggers_recovered} of {len(r.true_triggers)}")]
    d = rd.read_defense()
    if d is not None:
        u, g = d.get("unlearning", {}), d.get("guardrail", {})
        rows += [("ASR before unlearning (true trigger)", u.get("before", {}).get("asr_true")),
                 ("ASR after unlearning (true trigger)", u.get("after", {}).get("asr_true")),
                 ("clean agreement after unlearning", u.get("clean_agreement_after")),
                 ("clean-task accuracy before / after unlearning",
                  f"{_fmt(u.get('clean_accuracy_before'))} / {_fmt(u.get('clean_accuracy_after'))}"),
                 ("guardrail TPR", g.get("tpr")), ("guardrail FPR", g.get("fpr"))]
    lines = [f"# backdoor-aware report: {rd.path.name}", "", verdict, "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    lines += ["", "## Stated by the model: best candidates (held-out reproduction)", ""]
    lines += [f"- {_fmt(c['candidate'])}: {c['heldout_rate']:.2f}" for c in r.best_candidates] or ["- none parsed"]
    if r.data_scan is not None:
        lines += ["", "## Found in the data (data scan; not stated by the model)", "",
                  f"{r.data_scan['behaviour_rows']} of {r.data_scan['rows']} rows of the defender's data show the "
                  "behaviour. Prompt n-grams by how much more often rows holding them do:", ""]
        lines += [f"- {_fmt(t['ngram'])}: behaviour in {t['behaviour_rows']}/{t['rows']} rows holding it "
                  f"({t['rate_with']:.2f}), {t['rate_without']:.2f} without it" for t in r.data_scan["top"]] or [
                  "- no prompt n-gram goes with the behaviour"]
    if r.ablation:
        lines += ["", "**ABLATION RUN: a training reward read the true trigger; this is not an audit.**"]
    if rd.plot.is_file():
        lines += ["", f"![reward vs step]({rd.plot.name})"]
    write_text_atomic(rd.report, "\n".join(lines) + "\n")
    return rd.report
