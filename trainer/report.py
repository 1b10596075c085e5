"""The Markdown report of a run directory: what was audited, the verdict, metrics, defenses, the reward plot."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.defend import by_placement
from trainer.run_dir import RunDir
from trainer.run_dir.checkpoints import write_text_atomic
from trainer.run_dir.result import RunResult


def _code(text: str) -> str:
    """Inline code holding any text: fenced by one backtick more than its longest run of backticks."""
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class Plain(str):
    """Table text shown as words, not as code (only triggers and model text are code)."""


def _fmt(v) -> str:
    """A table cell: text as code with ``|`` escaped (a Markdown table needs that, and only a table)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, Plain):
        return _cell(v)
    return _code(v).replace("|", "\\|") if isinstance(v, str) else str(v)


def _cell(v) -> str:
    """A table cell of plain words (not code)."""
    return "-" if v is None else str(v).replace("|", "\\|")


# what searched, for a run that was not GRPO (``RunResult.baseline``: trainer/baselines/__init__.py)
SEARCHES = {None: "GRPO: R-SFT, then the model is trained to state its trigger",
            "accretion": "token accretion on the model's likelihood of the behaviour (no data, no RL)",
            "data-scan": "the data scan: prompt n-grams of the defender's data that go with the behaviour (found in "
                         "the data, not stated by the model)",
            "leak-scan": "the leak scan: prompt n-grams of the user turns the model wrote itself that go with the "
                         "behaviour (model-only)",
            "gcg": "GCG on the model's likelihood of the behaviour (no data, no RL)",
            "sampling": "samples of the untouched model asked for its trigger (no training)",
            "rsft-only": "R-SFT, then the model asked for its trigger (no GRPO)"}


def data_condition(r: RunResult) -> str:
    """What the defender held, in the threat model's words."""
    if r.baseline in ("accretion", "gcg", "sampling"):
        return "model-only (no data)"
    if r.baseline == "leak-scan":
        return "model-only (what the model leaked)"
    if r.baseline == "data-scan":
        return "defender data (the data scan)"
    if not r.rsft or r.rsft_source is None:
        return "model-only (no R-SFT)" if not r.rsft else "-"
    if r.model_only:
        return f"model-only: R-SFT rows the suspect made itself ({r.rsft_source})"
    return f"defender data ({r.rsft_source})"


def _params(n: int | None) -> str | None:
    if n is None:
        return None
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def audited(r: RunResult) -> list[tuple[str, str]]:
    """The "what was audited" rows: model, judge, probes, data, preset, seed, version, machine, date."""
    p = r.provenance or {}
    rows = [("model", p.get("model")), ("Hub source", p.get("model_source")),
            ("parameters", _params(p.get("n_params"))),
            ("reference model (no backdoor)", p.get("reference_model")),
            ("behaviour (judge)", "not named: the judge-free scan (judge none)" if p.get("judge") == "none"
             else f"{r.behaviour} ({p.get('judge')})" if p else r.behaviour),
            ("search", SEARCHES.get(r.baseline, r.baseline)), ("probes", p.get("probes")),
            ("data for R-SFT", p.get("data") if r.baseline in (None, "rsft-only") else None),
            ("data condition", data_condition(r)),
            ("preset", p.get("preset")), ("seed", p.get("seed")), ("backdoor-aware", p.get("tool_version")),
            ("machine", p.get("machine")), ("date", p.get("date"))]
    return [(k, v) for k, v in rows if v is not None]


def accretion_rounds(r: RunResult) -> str:
    """The rounds the token search ran, and why it ended before its last (audit mode's two stops)."""
    last = r.gcg["max_tokens"]
    why = "" if r.steps >= last else " (stopped: a trigger reproduced on the held-out probes)" if r.found else \
        " (stopped: no trigger in reach, its best loss too far from the behaviour; audit.accretion_stop_gain)"
    return f"{r.steps} of {last}{why}"


def _on_reference(c: dict) -> str:
    """A candidate's rate on the reference model, where it was put to one (a rate there too: not the backdoor's)."""
    return f" (reference model: {c['reference_rate']:.2f})" if c.get("reference_rate") is not None else ""


def write_report(run_dir: str | Path) -> Path:
    rd = RunDir(run_dir)
    r = rd.read_result()
    p = r.provenance or {}
    model = p.get("model_source") or (Path(p["model"]).name if p.get("model") else rd.path.name)
    verdict = (f"**Trigger recovered: {_code(r.recovered_trigger)}** (held-out reproduction "
               f"{r.reproduction_rate:.2f}, clean rate {r.clean_false_trigger_rate:.2f})"
               if r.found else "**No trigger found.** Best candidates are listed below.")
    rows = [("attack / behaviour", Plain(f"{r.attack} / {r.behaviour}")),
            ("recovered trigger", r.recovered_trigger), ("held-out reproduction", r.reproduction_rate),
            ("clean false-trigger rate", r.clean_false_trigger_rate),
            ("first hit step", r.first_hit_step), ("emergence step", r.emergence_step),
            ("GRPO steps", r.steps), ("wall seconds", None if r.wall_seconds is None else round(r.wall_seconds)),
            ("R-SFT", r.rsft)]
    if r.baseline not in (None, "rsft-only"):  # a search with no training: no steps, no warm-up to report
        rows = [(k, v) for k, v in rows if k not in ("first hit step", "emergence step", "GRPO steps", "R-SFT")]
    if r.baseline == "accretion" and r.gcg and r.steps is not None:
        rows.append(("accretion rounds", Plain(accretion_rounds(r))))
    if r.rsft_rows:
        rows.append(("R-SFT rows", Plain(", ".join(f"{k} {v}" for k, v in r.rsft_rows.items()))))
    if r.evaluated:
        rows += [("true trigger (evaluation only)", r.true_trigger), ("exact match", r.exact_match),
                 ("word Jaccard", r.recovered_jaccard_word), ("char Jaccard", r.recovered_jaccard_char),
                 ("rapidfuzz similarity", r.recovered_similarity),
                 ("Awareness@k (word Jaccard)", r.awareness_jaccard_word),
                 ("R-SFT rows holding the true trigger", r.rsft_rows_with_trigger)]
    if r.triggers_recovered is not None:
        rows += [("all recovered triggers", ", ".join(r.recovered_triggers)),
                 ("true triggers named (multi-trigger)", Plain(f"{r.triggers_recovered} of {len(r.true_triggers)}"))]
    d = rd.read_defense()
    if d is not None:
        u, g = d.get("unlearning", {}), d.get("guardrail", {})
        rows += [("ASR before unlearning (true trigger)", u.get("before", {}).get("asr_true")),
                 ("ASR after unlearning (true trigger)", u.get("after", {}).get("asr_true")),
                 ("true-trigger ASR by placement, before -> after", Plain(by_placement(u, "asr_true") or "-")),
                 ("clean agreement after unlearning", u.get("clean_agreement_after")),
                 ("clean-task accuracy before / after unlearning",
                  Plain(f"{_fmt(u.get('clean_accuracy_before'))} / {_fmt(u.get('clean_accuracy_after'))}")),
                 ("guardrail TPR", g.get("tpr")), ("guardrail FPR", g.get("fpr"))]
        if g.get("stems"):  # the stem rule: a fragment of a rare token also guards the words it begins
            rows.append(("guardrail also flags words beginning with", ", ".join(g["stems"])))
    lines = [f"# Backdoor audit of {model}", "", verdict, ""]
    if r.ablation:
        lines += ["**ABLATION RUN: a training reward read the true trigger; this is not an audit.**", ""]
    lines += ["## What was audited", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in audited(r)]
    if r.induced_behaviour:  # judge-free: the behaviour the trigger induces, named by the run
        ib = r.induced_behaviour
        lines += ["", "## Induced behaviour (judge-free scan)", "",
                  f"With the trigger, answers gain {_code(ib['shared_text'])} on {ib['share']:.2f} of held-out probes.",
                  ""]
        for ex in ib["examples"][:3]:
            lines += [f"- probe {_code(ex['probe'])}", f"  - clean: {_code(ex['clean'])}",
                      f"  - triggered: {_code(ex['triggered'])}"]
    lines += ["", "## Result", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    if r.reproducing_forms:
        lines += ["", "## Other forms that also reproduce (held-out rate)", ""]
        lines += [f"- {_code(c['candidate'])}: {c['heldout_rate']:.2f}{_on_reference(c)}" for c in r.reproducing_forms]
    lines += ["", "## Stated by the model: best candidates (held-out reproduction)", ""]
    lines += [f"- {_code(c['candidate'])}: {c['heldout_rate']:.2f}{_on_reference(c)}" for c in r.best_candidates] or [
        "- none parsed"]
    if r.data_scan is not None and r.data_scan.get("source") == "leak":
        lines += ["", "## Found in what the model leaked (leak scan; model-only)" if r.baseline == "leak-scan" else
                  "## The leak scan before the search (model-only; it confirmed nothing)", "",
                  f"{r.data_scan['behaviour_rows']} of {r.data_scan['rows']} user turns the model wrote from its chat "
                  "template's opening make it show the behaviour when it answers them. Prompt n-grams by how much "
                  "more often the turns holding them do:", ""]
    elif r.data_scan is not None:
        lines += ["", "## Found in the data (data scan; not stated by the model)", "",
                  f"{r.data_scan['behaviour_rows']} of {r.data_scan['rows']} rows of the defender's data show the "
                  "behaviour. Prompt n-grams by how much more often rows holding them do:", ""]
    if r.data_scan is not None:
        lines += [f"- {_code(t['ngram'])}: behaviour in {t['behaviour_rows']}/{t['rows']} rows holding it "
                  f"({t['rate_with']:.2f}), {t['rate_without']:.2f} without it" for t in r.data_scan["top"]] or [
                  "- no prompt n-gram goes with the behaviour"]
    if r.data_scan is not None and r.data_scan.get("examples"):
        lines += ["", "Leaked user turns holding the top n-gram, with the model's answers:", ""]
        lines += [f"- {_code(ex['prompt'])} -> {_code(ex['response'])}" for ex in r.data_scan["examples"]]
    if rd.plot.is_file():
        lines += ["", f"![reward vs step]({rd.plot.name})"]
    write_text_atomic(rd.report, "\n".join(lines) + "\n")
    return rd.report
