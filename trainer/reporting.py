"""What a run shows and sends beyond its own files: TRL's ``report_to`` integrations and progress bars.

Both follow the conventions a TRL user expects. ``report_to`` is passed through to TRL's GRPOConfig and
the R-SFT SFTConfig (``"none"`` by default, so a run's output and results do not change); TensorBoard
writes under the run directory (``RUN/logs/rsft``, ``RUN/logs/grpo``) unless ``TENSORBOARD_LOGGING_DIR``
says otherwise. Progress bars with ETA (R-SFT, GRPO, the held-out verdict) show when stderr is a terminal
and stay off in logs, CI and pipes (``progress: auto``); ``on``/``off`` force it. A bar never replaces the
run's concise log lines: TRL's per-step dict dump that comes with its bar is turned off.
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from transformers.trainer_callback import ProgressCallback

from trainer.errors import ConfigError

PROGRESS_MODES = ("auto", "on", "off")

# integration -> (transformers' availability check, what to pip install)
_INTEGRATIONS = {
    "azure_ml": ("is_azureml_available", "azureml-core"), "comet_ml": ("is_comet_available", "comet-ml"),
    "mlflow": ("is_mlflow_available", "mlflow"), "neptune": ("is_neptune_available", "neptune"),
    "tensorboard": ("is_tensorboard_available", "tensorboard"), "trackio": ("is_trackio_available", "trackio"),
    "wandb": ("is_wandb_available", "wandb"), "codecarbon": ("is_codecarbon_available", "codecarbon"),
    "clearml": ("is_clearml_available", "clearml"), "dagshub": ("is_dagshub_available", "dagshub"),
    "flyte": ("is_flytekit_available", "flytekit"), "dvclive": ("is_dvclive_available", "dvclive"),
    "swanlab": ("is_swanlab_available", "swanlab"), "kubeflow": ("is_kubeflow_available", "kubeflow"),
}


def _known() -> list[str]:
    """transformers' integrations (the ones a Trainer accepts), falling back to the table above."""
    try:
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
        return list(INTEGRATION_TO_CALLBACK)
    except ImportError:
        return list(_INTEGRATIONS)


def _names(report_to: str | list[str]) -> list[str]:
    return [report_to] if isinstance(report_to, str) else list(report_to)


def check_report_to(names: str | list[str]) -> None:
    """Names only (a saved config must load on a machine without the packages): one-line ConfigError."""
    names, known = _names(names), _known()
    unknown = [n for n in names if n not in (*known, "none", "all")]
    if unknown:
        raise ConfigError(f"report_to: unknown integration(s) {', '.join(map(repr, unknown))}; "
                          f"choose from none, all, {', '.join(known)}")
    if len(names) > 1 and ({"none", "all"} & set(names)):
        raise ConfigError("report_to: none and all go alone, not in a list with other integrations")


def check_report_to_installed(names: str | list[str]) -> None:
    """Every named integration's package is importable (checked when a run starts, before anything loads;
    otherwise TRL fails only when it builds the trainer, after R-SFT)."""
    check_report_to(names)
    names = _names(names)
    utils = importlib.import_module("transformers.integrations.integration_utils")
    for name in names:
        if name not in _INTEGRATIONS:
            continue
        check, package = _INTEGRATIONS[name]
        available = getattr(utils, check, None)
        if available is not None and not available():
            raise ConfigError(f"report_to: {name} needs the {package} package (pip install {package}), "
                              "or leave report_to at none")


def report_to_arg(names: str | list[str]) -> str | list[str]:
    """What TRL's ``report_to`` gets: ``"none"``/``"all"`` as TRL spells them, else the list."""
    names = _names(names)
    return names[0] if names in (["none"], ["all"]) else names


def route_logs(trainer, log_dir: str | Path | None) -> None:
    """Send a Trainer's TensorBoard events to ``log_dir`` (TRL's default is ``output_dir/runs/DATE_HOST``:
    R-SFT's output dir is temporary, and a run's logs belong to its run directory). The user's
    ``TENSORBOARD_LOGGING_DIR`` wins, as it does in TRL."""
    if log_dir is None or os.getenv("TENSORBOARD_LOGGING_DIR"):
        return
    from transformers.integrations import TensorBoardCallback
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = str(log_dir)


def progress_enabled(mode: str | bool = "auto", stream=None) -> bool:
    """``on``/``off`` (YAML reads a bare on/off as true/false: the same), or ``auto``: bars only when
    ``stream`` (stderr, where tqdm draws) is a terminal."""
    if isinstance(mode, bool):
        return mode
    if mode not in PROGRESS_MODES:
        raise ConfigError(f"progress must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def show_library_bars(on: bool) -> None:
    """transformers' and datasets' own bars (downloads, weight loading, dataset map) follow the same rule."""
    import datasets
    import transformers
    if on:
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
    else:
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


class BarOnlyProgress(ProgressCallback):
    """TRL's training bar (steps, ETA) without the full metrics dict it prints each logging step; the bar
    shows loss and reward, the run log keeps its one line every few steps. It is labelled with its phase, and a
    run that stops early (audit mode's confirmation, a plateau, a signal) closes it at its last step, marked so,
    not at "46% 91/200" with an ETA for steps that never run."""

    label = "training"

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description(self.label)

    def on_train_end(self, args, state, control, **kwargs):
        bar = self.training_bar
        if bar is not None and bar.n < (bar.total or 0):
            bar.total = bar.n
            bar.set_description(f"{self.label} (stopped early)")
            bar.refresh()
        super().on_train_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {k: f"{logs[k]:.3g}" for k in ("loss", "reward") if isinstance(logs.get(k), (int, float))}
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


def concise_progress(trainer, label: str) -> None:
    """Swap the Trainer's ``ProgressCallback`` (present when ``disable_tqdm`` is False) for ``BarOnlyProgress``,
    labelled with the phase (``R-SFT``, ``GRPO``)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(type("PhaseProgress", (BarOnlyProgress,), {"label": label}))
