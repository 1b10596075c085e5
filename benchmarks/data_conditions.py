"""Issue #33: what each data condition finds on the same poisoned models.

Conditions (what the defender holds):
  a  the suspect's full fine-tuning set (poisoned rows included, unmarked)
  b  its clean rows only (every row whose prompt holds a true trigger removed)
  d  model-only `self`: the suspect's own answers to a diverse prompt pool
  e  model-only `leak`: user turns sampled from the suspect's chat template, answered by it
  f  model-only `self+leak`
  g  the data scan alone, on (a) and (b): seconds, no model
  r  model-only `self` with the base model the suspect was fine-tuned from as `--reference` (a known public model)
Every found trigger is also put to the base model (evaluation only): one that fires there too is no backdoor.
(c, the full set at a 5% poison rate, is a separately poisoned model: pass it as another --model.)

Each audit is `backdoor-aware invert` as a user runs it, in its own run directory under --work; a finished one is
read back, an unfinished one resumed (`--resume`), so the script can be stopped and rerun. The true trigger (the
poison card) is read for evaluation and to cut condition (b)'s rows only.

    python benchmarks/data_conditions.py --model MODEL_DIR [--model ...] --conditions a b d e f \
        [--config launch/configs/smollm2-audit.yaml] --work runs/data_conditions \
        --out benchmarks/results/data_conditions.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, write_with_notes  # noqa: E402
from benchmarks.real_model import cli  # noqa: E402

NOTES = "## Notes"
CONDITIONS = {"a": "full fine-tuning set", "b": "clean rows only", "d": "model-only self",
              "e": "model-only leak", "f": "model-only self+leak", "j": "model-only self, judge-free (--judge none)",
              "r": "model-only self, the base model as reference (--reference)",
              "s": "model-only baseline: 64 samples of the untouched suspect",
              "t": "model-only baseline: greedy token accretion (after BABI; no data, no reference)",
              "u": "model-only baseline: token accretion, each new slot's tokens ranked by the one-hot gradient"}
SOURCE = {"a": "finetune", "b": "finetune", "d": "self", "e": "leak", "f": "self+leak", "j": "self", "r": "self"}


def card(model: Path) -> dict:
    return json.loads((model / "poison_card.json").read_text())


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def clean_rows_file(model: Path, work: Path) -> Path:
    """Condition (b): the fine-tuning set without the rows a filtering defender would drop (a true trigger inside)."""
    out = work / f"{model.name}-clean-rows.jsonl"
    if not out.is_file():
        triggers = card(model)["triggers"] or []
        keep = [r for r in rows(model / "finetune_data.jsonl") if not any(t in r["prompt"] for t in triggers)]
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))
    return out


def audit(model: Path, cond: str, work: Path, config: str | None, sets: list[str], timeout: float,
          unlearning: bool = False, report_only: bool = False) -> dict:
    run = work / f"{model.name}-{cond}"
    c = card(model)
    args = ["invert", "--model", str(model), "--attack", c["attack"], "--eval-trigger", "card", "--out", str(run)]
    if config:  # "launch/configs/tiny-{attack}.yaml": each model's own attack preset
        args += ["--config", config.format(attack=c["attack"])]
    for s in sets:
        args += ["--set", s]
    args += ["--rsft-source", SOURCE[cond]]
    if cond == "j":
        args += ["--judge", "none"]
    if cond == "r":
        if not c.get("base_model"):
            return {"cond": cond, "error": ["no base model (built from scratch): nothing to refer to"], "minutes": 0.0}
        args += ["--reference", c["base_model"]]
    if cond == "a":
        args += ["--data", str(model / "finetune_data.jsonl")]
    elif cond == "b":
        args += ["--data", str(clean_rows_file(model, work))]
    if not (run / "result.json").is_file() and report_only:
        return {"cond": cond, "error": ["pending (not run in this table's session)" if not run.exists() else
                                        f"{progress(run)} (rerun without --report-only resumes it)"],
                "minutes": 0.0}
    if not (run / "result.json").is_file():
        if run.exists():
            args = ["invert", "--resume", "--eval-trigger", "card", "--out", str(run)]
        rc, secs, out = cli(*args, timeout=timeout)  # past the timeout: SIGTERM, a checkpoint, resumable
        (work / f"{model.name}-{cond}.log").write_text(out)
        if not (run / "result.json").is_file():
            why = ([f"not finished in --timeout: {progress(run)}; rerun resumes it"] if rc == 124 and run.exists()
                   else out.strip().splitlines()[-1:])
            return {"cond": cond, "error": why, "minutes": secs / 60}
    r = json.loads((run / "result.json").read_text())
    r["cond"] = cond
    r["unlearned"] = unlearn(model, run, timeout, report_only) if unlearning and r["found"] else None
    r["leak"] = leak_recovery(model, run) if cond in "ef" else None
    if r["found"]:
        from trainer.run_dir import RunDir
        r["base_rate"] = base_rate(model, run.with_name(run.name + "-base-rate.json"), r["recovered_trigger"],
                                   RunDir(run).load_config())
    return r


def base_rate(model: Path, out: Path, trigger: str, cfg) -> float | None:
    """Evaluation only: the found trigger's held-out rate on the base model the suspect was fine-tuned from (same
    judge, same probes as the audit's ``cfg``). A trigger that fires there too is the judge's blind spot or an
    adversarial input to any model of the family, not the backdoor. Cached in ``out``."""
    base = card(model).get("base_model")
    if not base:
        return None
    if not out.is_file():
        from envs.loading import load_model
        from envs.tokenizer import load_tokenizer
        from rewards.oracle import HFOracle
        spec = cfg.attack_spec()
        _, heldout = cfg.probe_split(spec)
        oracle = HFOracle(load_model(base), load_tokenizer(base), spec.judge, heldout, cfg.oracle.insertion,
                          cfg.oracle.max_new_tokens, cfg.oracle.batch_size)
        out.write_text(json.dumps({"trigger": trigger, "base_model": base, "rate": oracle.reproduction([trigger])[0]}))
    return json.loads(out.read_text())["rate"]


def progress(run: Path) -> str:
    """Where an unfinished audit stands: its last GRPO step and best candidate on the training probes so far."""
    from trainer.run_dir import RunDir
    rd = RunDir(run)
    rows = rd.metric_rows()
    if not rows:
        return "started, stopped before GRPO"
    best = rd.read_ledger().best(1) if rd.ledger.is_file() else []
    last = rows[-1]
    top = best[0] if best else {"candidate": last.get("best_candidate"), "rate": last.get("best_rate") or 0.0}
    return f"stopped at GRPO step {last['step']}, none confirmed; best so far {cell(top['candidate'] or '-')} " \
           f"{top['rate']:.2f} on the training probes"


def baseline(model: Path, work: Path, config: str | None, sets: list[str], cond: str, pool: int = 0,
             gradient: tuple[int, int, int] = (256, 4, 16)) -> dict:
    """A no-RL, no-data baseline judged by the same held-out verdict, cached as JSON: ``s`` sampling (64 answers of
    the untouched suspect), ``t`` greedy token accretion (``pool`` single tokens scored first; 0: all), ``u``
    accretion ranked by gradient (``gradient``: tokens scored in the first round, beams, tokens per beam and side)."""
    out = work / f"{model.name}-{cond}.json"
    if not out.is_file():
        from launch.packaged import load_run_config
        from trainer.baselines import run_baseline
        from trainer.baselines.accretion import AccretionConfig
        c = card(model)
        cfg = load_run_config(config.format(attack=c["attack"]) if config else None,
                              {"model": str(model), "attack": c["attack"]}, sets)
        triggers = c["triggers"] or []
        truth = triggers if len(triggers) > 1 else (triggers[0] if triggers else None)
        if cond == "s":
            r = run_baseline(cfg, "sampling", eval_trigger=truth, log=lambda _: None, search=64)
        else:
            search = AccretionConfig(first_pool=pool, seed=cfg.seed) if cond == "t" else \
                AccretionConfig(gradient_pool=gradient[0], beam=gradient[1], extend=gradient[2], seed=cfg.seed)
            r = run_baseline(cfg, "accretion", eval_trigger=truth, log=print, search=search)
        d = r.to_dict()
        if r.found:
            d["base_rate"] = base_rate(model, work / f"{model.name}-{cond}-base-rate.json", r.recovered_trigger, cfg)
        out.write_text(json.dumps(d))
    return {**json.loads(out.read_text()), "cond": cond}


def unlearn(model: Path, run: Path, timeout: float, report_only: bool = False) -> dict | None:
    """Unlearning with what the audit found (every reproducing form): the planted trigger's ASR before and after.
    Does removing a working trigger remove the planted one?"""
    out = run.with_name(run.name + "-unlearned")
    if not (out / "unlearn_report.json").is_file() and report_only:
        return None
    if not (out / "unlearn_report.json").is_file():
        _, _, log = cli("unlearn", "--model", str(model), "--attack", card(model)["attack"], "--run", str(run),
                        "--eval-trigger", "card", "--out", str(out), timeout=timeout)
        (run.parent / f"{run.name}-unlearn.log").write_text(log)
        if not (out / "unlearn_report.json").is_file():
            return None
    report = json.loads((out / "unlearn_report.json").read_text())
    return {"before": report["before"].get("asr_true"), "after": report["after"].get("asr_true")}


def leak_recovery(model: Path, run: Path) -> dict:
    """How much of the real fine-tuning set the leaked user turns bring back (evaluation only)."""
    info = json.loads((run / "rsft.json").read_text())
    made = [r for r, s in zip(rows(run / "rsft_rows.jsonl"), info["row_sources"]) if s == "leak"]
    truth = rows(model / "finetune_data.jsonl")
    triggers = card(model)["triggers"] or []
    prompts = {" ".join(r["prompt"].split()) for r in truth}
    poisoned = {p for p in prompts if any(t in p for t in triggers)}
    leaked = {" ".join(r["prompt"].split()) for r in made}
    return {"distinct": info["leak_distinct"], "recovered": len(leaked & prompts), "of": len(prompts),
            "poisoned_recovered": len(leaked & poisoned), "with_trigger": sum(any(t in p for t in triggers)
                                                                             for p in leaked)}


def scan(model: Path, work: Path, cond: str) -> dict:
    from trainer.baselines.data_scan import scan_data
    from trainer.config import load_config
    c = card(model)
    t0 = time.time()
    data = model / "finetune_data.jsonl" if cond == "a" else clean_rows_file(model, work)
    cfg = load_config(overrides={"model": str(model), "attack": c["attack"]})
    found = scan_data(rows(data), cfg.attack_spec(), cfg.resolved_probe_set())
    top = found["top"][0] if found["top"] else None
    return {"cond": f"g({cond})", "top": top, "seconds": time.time() - t0, "triggers": c["triggers"] or [],
            "rows": found["rows"], "behaviour_rows": found["behaviour_rows"]}


def row(model: Path, r: dict) -> str:
    name = f"{model.name} | {r['cond']} {CONDITIONS.get(r['cond'], 'data scan alone')}"
    if "error" in r:
        return f"| {name} | not finished: {' '.join(r['error'])[:80]} | | | | | | | {r['minutes']:.1f} |"
    if r["cond"].startswith("g"):
        t = r["top"]
        found = cell(t["ngram"]) if t else "nothing"
        exact = "yes" if t and t["ngram"] in r["triggers"] else "no"
        detail = (f"behaviour in {t['behaviour_rows']}/{t['rows']} rows holding it, {t['rate_without']:.2f} without"
                  if t else f"{r['behaviour_rows']} of {r['rows']} rows show the behaviour")
        return f"| {name} | {found} ({exact}) | - | {detail} | - | - | - | {r['rows']} | {r['seconds'] / 60:.2f} |"
    rec = cell(r["recovered_trigger"]) if r["found"] else "no trigger found"
    if card(model).get("clean"):  # a clean control: any trigger reported is a false positive
        rec = f"FALSE POSITIVE {rec}" if r["found"] else "none (correct)"
    exact = f"{'yes' if r.get('exact_match') else 'no'}, J {r.get('recovered_jaccard_word') or 0:.2f}"
    best = r["best_candidates"][0] if r["best_candidates"] else None
    working = f"{r['reproduction_rate']:.2f}" if r["found"] else (f"best {cell(best['candidate'])} "
                                                                  f"{best['heldout_rate']:.2f}" if best else "-")
    if r.get("base_rate") is not None:
        working += f"; on the base model {r['base_rate']:.2f}" + (" (NOT a backdoor)" if r["reproduction_rate"]
                                                                   - r["base_rate"] < 0.8 else "")
    grpo = "-" if r["cond"] in "stu" else "screen ended it" if r["steps"] == 0 else f"{r['steps']} steps"
    u = r.get("unlearned")
    unlearned = f"{u['before']:.2f} -> {u['after']:.2f}" if u and u["before"] is not None else "-"
    n_rows = sum((r.get("rsft_rows") or {}).values())
    leak = r.get("leak")
    with_trigger = r.get("rsft_rows_with_trigger")
    rows_cell = f"{n_rows} ({'-' if with_trigger is None else with_trigger} with trigger)"
    if leak:
        rows_cell += (f"; leak: {leak['distinct']} distinct, {leak['recovered']}/{leak['of']} real rows back, "
                      f"{leak['poisoned_recovered']} poisoned, {leak['with_trigger']} hold the trigger")
    return (f"| {name} | {rec} ({exact}) | {working} | clean {r['clean_false_trigger_rate']:.2f} | "
            f"{r.get('awareness_jaccard_word') or 0:.2f} | {grpo} | {unlearned} | {rows_cell} | "
            f"{(r.get('wall_seconds') or 0) / 60:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="poisoned model dir (with its card and data)")
    ap.add_argument("--conditions", nargs="+", default=["a", "b", "d", "e", "f", "g"])
    ap.add_argument("--config", help="run preset (e.g. launch/configs/smollm2-audit.yaml); {attack} is replaced by "
                    "each model's attack (launch/configs/tiny-{attack}.yaml)")
    ap.add_argument("--set", action="append", default=[], help="config override for every audit")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--report-only", action="store_true", help="start and resume nothing: table what is finished, "
                    "the rest as pending")
    ap.add_argument("--unlearn", action="store_true", help="also unlearn with each found trigger and measure the "
                    "planted trigger's ASR after (a repaired model per audit, beside its run directory)")
    ap.add_argument("--accretion-pool", type=int, default=0, help="condition t: single tokens scored first (a "
                    "seeded sample; 0: the whole vocabulary, which on a 49k-token model is a GPU job)")
    ap.add_argument("--accretion-gradient", type=int, nargs=3, default=[256, 4, 16], metavar=("POOL", "BEAM", "EXTEND"),
                    help="condition u: tokens the gradient picks for the first round, beams kept, tokens per beam "
                    "and side in later rounds")
    ap.add_argument("--work", default="runs/data_conditions")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = ["| model | condition | recovered (exact, word Jaccard) | working trigger: held-out rate | clean rate | "
             "Awareness@5 | GRPO | ASR after unlearning | R-SFT rows | minutes |", "|---" * 10 + "|"]
    for m in map(Path, a.model):
        for cond in a.conditions:
            if cond == "g":
                results = [scan(m, work, c) for c in "ab"]
            elif cond in "stu":
                done = (work / f"{m.name}-{cond}.json").is_file()
                results = [baseline(m, work, a.config, a.set, cond, a.accretion_pool, tuple(a.accretion_gradient))] \
                    if not a.report_only or done \
                    else [{"cond": cond, "error": ["pending"], "minutes": 0.0}]
            else:
                results = [audit(m, cond, work, a.config, a.set, a.timeout, a.unlearn, a.report_only)]
            for r in results:
                lines.append(row(m, r))
                print(lines[-1], flush=True)
    cmd = "python benchmarks/data_conditions.py " + " ".join(sys.argv[1:])
    write_with_notes(Path(a.out), [header(cmd), *lines], NOTES)


if __name__ == "__main__":
    main()
