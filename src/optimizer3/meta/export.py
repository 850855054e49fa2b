"""Export a meta-training run's best optimizer as a pretrained optimizer: `NAME.pt` (a
learned-optimizer file) and `NAME.json`, its card (`optimizer3.pretrained`).

The card records the run's command, code version, machine and meta-training time, and the
figures of an evaluation of that same optimizer on its training task, so that every shipped
number can be traced to the commands that produced it.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from optimizer3 import pretrained
from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import Optimizer3Error, RunDirectoryError, UsageError
from optimizer3.files import atomic_save, write_text_atomic
from optimizer3.learned.files import drop_runtime_fields, load_learned_optimizer, make_optimizer_file, meta_params_digest
from optimizer3.learned.lstm import MetaParams
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.tasks import TaskConfig


@dataclasses.dataclass(frozen=True)
class CardText:
    """What a card says in words: what the optimizer is for, how it was made, where it fails."""

    purpose: str
    description: str
    known_failures: tuple[str, ...] = ()


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


def _evaluates(results: dict[str, Any], config: MetaTrainConfig, meta_params: MetaParams) -> bool:
    """Whether `results` (a results.json) evaluated exactly `meta_params`, from a run with
    `config`, on that run's own task (not a generalization test)."""
    try:
        evaluated = from_dict(MetaTrainConfig, drop_runtime_fields(results["config"]["meta_train"]))
        task = from_dict(TaskConfig, results["config"].get("task", results["config"]["meta_train"]["task"]))
    except (KeyError, TypeError, AttributeError, UsageError):
        return False
    return (evaluated == config and task == config.task and "lstm" in results.get("summaries", {})
            and results["config"].get("meta_params_sha256") == meta_params_digest(meta_params))


def _recipe_before(config: MetaTrainConfig, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages that made the optimizer a run started from (`init_from`): the recipe of a
    learned-optimizer file, if that file still holds the meta-parameters the run started from
    (run.json records their digest); none for a random start, a training checkpoint or a file
    that changed since. A recipe that lacks its first stages starts from something other than
    scratch, which `reproduce --meta-train` refuses to run."""
    if not config.init_from:
        return []
    try:
        source = load_learned_optimizer(pretrained.resolve(config.init_from))
    except Optimizer3Error:
        return []
    if meta_params_digest(source.meta_params) != run.get("init_from_meta_params_sha256"):
        return []
    return list(source.recipe)


def export_pretrained(
    run_dir: pathlib.Path,
    name: str,
    evaluation_dir: pathlib.Path,
    out_dir: pathlib.Path,
    card_text: CardText,
    overwrite: bool = False,
) -> tuple[pathlib.Path, pathlib.Path]:
    """Write `NAME.pt` and `NAME.json` into `out_dir` from a meta-training run and its evaluation.

    The optimizer is the run's best meta-parameters by validation loss; the evaluation must be
    of that same run (its results.json holds the run's meta-training config). `card_text` is
    what the card says of it in words.
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
    stage = {"meta_train": to_dict(config), "run": run, "seconds": _meta_training_seconds(run_dir)}
    recipe = [*_recipe_before(config, run), stage]
    card = {
        "name": name,
        "purpose": card_text.purpose,
        "known_failures": list(card_text.known_failures),
        "description": card_text.description,
        "file": weights.name,
        "sha256": None,
        "task": to_dict(config.task),
        "optimizer": to_dict(config.optimizer),
        "meta_training": {
            **run,
            "seed": config.seed,
            "trajectories": f"{checkpoint['trajectory']} of {config.trajectories}",
            "seconds": stage["seconds"],
            "best_validation_loss": checkpoint["best_validation"],
        },
        "recipe": [{"command": s["run"]["command"], "seconds": s["seconds"], "date": s["run"]["date"]} for s in recipe],
        "evaluation": _evaluation_figures(results),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"Cannot create the output directory {out_dir}: {error.strerror}") from None
    atomic_save(make_optimizer_file(config.optimizer, checkpoint["best_meta_params"], to_dict(config), recipe), weights)
    card["sha256"] = pretrained.sha256(weights)
    write_text_atomic(card_path, json.dumps(card, indent=1) + "\n")
    return weights, card_path
