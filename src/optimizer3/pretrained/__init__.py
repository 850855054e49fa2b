"""Pretrained learned optimizers shipped in the package, each with a card saying what made it.

Every optimizer is two files in this directory: `NAME.pt`, a learned-optimizer file (a plain
dict, see `meta.checkpoint.make_optimizer_file`), and `NAME.json`, its card: the command, seed,
code version, machine and time of its meta-training, and its evaluation against the tuned
baselines. `optimizer3 export` writes both from a meta-training run and an evaluation of it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from optimizer3.config import MetaTrainConfig, from_dict, to_dict
from optimizer3.errors import CheckpointError, RunDirectoryError, UsageError
from optimizer3.files import write_text_atomic
from optimizer3.meta.checkpoint import atomic_save, load_checkpoint, make_optimizer_file, meta_params_digest
from optimizer3.tasks import TaskConfig

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent


def available(directory: pathlib.Path | None = None) -> list[str]:
    """Names of the pretrained optimizers in `directory` (default: the package's)."""
    return sorted(card.stem for card in (directory or PRETRAINED_DIR).glob("*.json"))


def pretrained_path(name: str, directory: pathlib.Path | None = None) -> pathlib.Path:
    """The learned-optimizer file of the pretrained optimizer `name`."""
    names = available(directory)
    if name not in names:
        raise UsageError(f"No pretrained optimizer named {name!r}; available: {', '.join(names) or 'none'}")
    card = load_card(name, directory)
    path = (directory or PRETRAINED_DIR) / card["file"]
    if not path.is_file() or sha256(path) != card["sha256"]:
        raise CheckpointError(
            f"Pretrained optimizer {name}: {path} is missing or does not match its card's SHA-256; "
            "reinstall optimizer3"
        )
    return path


def resolve(source: str) -> pathlib.Path:
    """The file of `source`: a shipped pretrained name, or else a path to a learned-optimizer
    file or a training checkpoint."""
    if source in available():
        return pretrained_path(source)
    path = pathlib.Path(source)
    if not path.is_file():
        raise UsageError(
            f"No learned optimizer {source!r}: it is neither a file nor a shipped pretrained name "
            f"({', '.join(available())}); give a checkpoint, an exported file or one of those names"
        )
    return path


def load_card(name: str, directory: pathlib.Path | None = None) -> dict[str, Any]:
    """The card of the pretrained optimizer `name`, as a dict."""
    return json.loads(((directory or PRETRAINED_DIR) / f"{name}.json").read_text())


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: pathlib.Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot read {what} {path}: {error}") from None


def _meta_training_seconds(run_dir: pathlib.Path) -> float:
    seconds = None
    try:
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            seconds = json.loads(line).get("seconds", seconds)
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot read the meta-training log of {run_dir}: {error}") from None
    if seconds is None:
        raise UsageError(f"{run_dir / 'metrics.jsonl'} records no trajectory; export a run that has trained")
    return seconds


def _evaluation_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The parts of an evaluation's results.json that a card keeps."""
    keep = ("mean", "mean_ci", "median", "geometric_mean", "diverged", "test_accuracy", "test_accuracy_ci")
    return {
        "command": results["command"],
        "date": results["date"],
        "code_version": results.get("code_version", "not recorded"),
        "machine": results["machine"],
        "task": results["config"].get("task", results["config"]["meta_train"]["task"]),
        "test_problems": results["config"]["evaluation"]["test_problems"],
        "steps": results["steps"],
        "learning_rates": results["learning_rates"],
        "ratios": results["ratios"],
        "final_loss": {name: {k: s[k] for k in keep if k in s} for name, s in results["summaries"].items()},
    }


def _evaluates(results: dict[str, Any], config: MetaTrainConfig, meta_params) -> bool:
    """Whether `results` (a results.json) evaluated exactly `meta_params`, from a run with
    `config`, on that run's own task (not a generalization test)."""
    try:
        evaluated = from_dict(MetaTrainConfig, results["config"]["meta_train"])
        task = from_dict(TaskConfig, results["config"].get("task", results["config"]["meta_train"]["task"]))
    except (KeyError, TypeError, AttributeError, UsageError):
        return False
    return (evaluated == config and task == config.task and "lstm" in results.get("summaries", {})
            and results["config"].get("meta_params_sha256") == meta_params_digest(meta_params))


def export_pretrained(
    run_dir: pathlib.Path,
    name: str,
    evaluation_dir: pathlib.Path,
    out_dir: pathlib.Path,
    description: str,
    overwrite: bool = False,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write `NAME.pt` and `NAME.json` into `out_dir` from a meta-training run and its evaluation.

    The optimizer is the run's best meta-parameters by validation loss; the evaluation must be
    of that same run (its results.json holds the run's meta-training config).
    """
    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"Invalid pretrained name: {name!r}; use letters, digits, - and _")
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    if not (run_dir / "run.json").is_file():
        raise UsageError(
            f"{run_dir} has no run.json (command, code version, machine): it predates provenance "
            "records; meta-train it again to export it"
        )
    run = _read_json(run_dir / "run.json", "run record")
    results = _read_json(evaluation_dir / "results.json", "evaluation results")
    config = checkpoint["config"]
    if not _evaluates(results, config, checkpoint["best_meta_params"]):
        raise UsageError(
            f"{evaluation_dir / 'results.json'} is not an evaluation of the best optimizer of {run_dir} "
            f"on its training task; run optimizer3 evaluate --checkpoint {run_dir / 'checkpoint.pt'} first"
        )
    weights, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    for path in (weights, card_path):
        if path.exists() and not overwrite:
            raise RunDirectoryError(f"{path} exists; pass --overwrite to replace it")
    # Everything the card needs is read before anything is written, so that a bad run directory
    # leaves no weights file without its card (or an old card beside new weights).
    card = {
        "name": name,
        "description": description,
        "file": weights.name,
        "sha256": None,
        "task": to_dict(config.task),
        "optimizer": to_dict(config.optimizer),
        "meta_training": {
            **run,
            "seed": config.seed,
            "trajectories": f"{checkpoint['trajectory']} of {config.trajectories}",
            "seconds": _meta_training_seconds(run_dir),
            "best_validation_loss": checkpoint["best_validation"],
        },
        "evaluation": _evaluation_figures(results),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"Cannot create the output directory {out_dir}: {error.strerror}") from None
    atomic_save(make_optimizer_file(config, checkpoint["best_meta_params"]), weights)
    card["sha256"] = sha256(weights)
    write_text_atomic(card_path, json.dumps(card, indent=1) + "\n")
    return weights, card_path


def _threads(count: int) -> str:
    return f"{count} thread" + ("" if count == 1 else "s")


def describe(card: dict[str, Any]) -> str:
    """A few lines about one pretrained optimizer, for `optimizer3 list-pretrained`."""
    training, evaluation = card["meta_training"], card["evaluation"]
    optimizer = card["optimizer"]
    lines = [
        f"{card['name']}: {card['description']}",
        f"  architecture: {optimizer['layers']} x {optimizer['hidden_size']} LSTM, "
        f"preprocessing {optimizer['preprocessing']}, output scale {optimizer['output_scale']}, "
        f"{optimizer.get('update_form', 'linear')} update"
        + (f" (mix scale {optimizer.get('mix_scale', 10.0)}"
           + (f", RMS decay {optimizer['mix_rms_decay']}" if optimizer.get("mix_rms_decay") else "") + ")"
           if optimizer.get("update_form") == "gradient_mix" else "")
        + (f", gradient averages {' '.join(map(str, optimizer['momentum_inputs']))}"
           + (" (bias-corrected)" if optimizer.get("momentum_bias_correction") else "")
           if optimizer.get("momentum_inputs") else ""),
        f"  meta-trained: {training['command']}",
        f"    seed {training['seed']}, {training['trajectories']} trajectories, "
        f"{training['seconds']:.0f} s on {training['machine']['processor']} "
        f"({_threads(training['machine']['torch_threads'])}), code {training['code_version']}, {training['date']}",
        f"  evaluated: {evaluation['command']}",
    ]
    best = min((n for n in evaluation["final_loss"] if n != "lstm"), key=lambda n: evaluation["final_loss"][n]["mean"])
    learned, baseline = evaluation["final_loss"]["lstm"], evaluation["final_loss"][best]
    line = (f"    {evaluation['test_problems']} test problems, {evaluation['steps']} steps: mean final loss "
            f"{learned['mean']:.3g} vs {baseline['mean']:.3g} for tuned {best} "
            f"({evaluation['ratios']['mean_vs_best_baseline']:.2f}x)")
    if "test_accuracy" in learned:
        line += f"; test accuracy {learned['test_accuracy']:.3f} vs {baseline['test_accuracy']:.3f}"
    lines.append(line)
    return "\n".join(lines)


__all__ = ["PRETRAINED_DIR", "available", "describe", "export_pretrained", "load_card", "pretrained_path"]
