"""`optimizer3 reproduce`: the paper's experiments as presets, run through the same steps as
`meta-train` and `evaluate` (`experiments.commands`).

- quadratic: meta-train on random 10-dimensional quadratics with the paper's settings (the
  defaults of `MetaTrainConfig`), then compare with the tuned baselines on 1,000 test problems.
- mnist: the five MNIST experiments with a shipped optimizer, or, with `--meta-train`, with one
  meta-trained here from scratch by that optimizer's recipe: every stage that made it, each
  starting from the one before.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

from optimizer3 import pretrained
from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import UsageError
from optimizer3.evaluation.config import EvaluationConfig
from optimizer3.experiments.commands import (
    check_runtime, check_seeds, check_task, evaluate_learned, run_directory, run_record, start_meta_training,
    write_json,
)
from optimizer3.experiments.mnist import MNIST_EVALUATION, REPRODUCE_OPTIMIZER, run_mnist_experiments
from optimizer3.learned.files import load_learned_optimizer, drop_runtime_fields
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.provenance import command_line
from optimizer3.runtime import RuntimeConfig

EXPERIMENTS = ("quadratic", "mnist")
# The paper's settings are the defaults of the configs.
QUADRATIC = (MetaTrainConfig(), EvaluationConfig())
MNIST = (MetaTrainConfig(), MNIST_EVALUATION)


def reproduce_quadratic(
    meta: MetaTrainConfig, evaluation: EvaluationConfig, runtime: RuntimeConfig, run_dir: str, overwrite: bool,
    data_dir: str | None, progress: bool, argv: list[str],
) -> str:
    """Meta-train on quadratics, evaluate against the tuned baselines; the report's text."""
    check_seeds(meta, evaluation)
    if meta.task.name != "quadratic":
        raise UsageError(f"reproduce quadratic runs the quadratic task, not --task {meta.task.name}; "
                         "use meta-train and evaluate for other tasks")
    check_runtime(meta, runtime)
    check_task(meta.task, data_dir, runtime.device)
    record = run_record(argv, runtime, meta)
    with run_directory(run_dir, overwrite) as path:
        config = {"meta_train": to_dict(meta), "evaluation": to_dict(evaluation)}
        if progress:
            print("config:", json.dumps(config), flush=True)
        result = start_meta_training(meta, runtime, path, record, data_dir, progress, config)
        if progress:
            print(f"meta-training: {result.seconds:.0f} s, best validation loss {result.best_validation:.4g}", flush=True)
        comparison, table = evaluate_learned(
            (result.best_meta_params, meta.optimizer), meta.task, meta.horizon, meta.validation_seed, evaluation,
            runtime, path, data_dir, progress, config, f"Random {meta.task.dim}-dimensional quadratics", argv,
            {"meta_training_seconds": result.seconds})
    ratios = "".join(f"\n{name.replace('_', ' ')}: {value:.3f}" for name, value in comparison.ratios().items())
    return f"{table}{ratios}\nresults: {path / 'results.md'}, plot: {path / 'loss_curves.png'}"


def recipe(name: str) -> list[MetaTrainConfig]:
    """The meta-training stages that made the shipped optimizer `name`, first to last."""
    loaded = load_learned_optimizer(pretrained.pretrained_path(name))
    stages = [stage["meta_train"] for stage in loaded.recipe] or [loaded.meta_train]
    return [from_dict(MetaTrainConfig, drop_runtime_fields(stage)) for stage in stages]


def reproduce_mnist(
    name: str, meta_train: bool, adjust: Callable[[MetaTrainConfig], MetaTrainConfig], evaluation: EvaluationConfig,
    runtime: RuntimeConfig, run_dir: str, overwrite: bool, data_dir: str | None, progress: bool, argv: list[str],
) -> str:
    """The five MNIST experiments with the shipped optimizer `name`, or with `meta_train` with
    one meta-trained here by its recipe, each stage changed by `adjust` (the flags given)."""
    loaded = load_learned_optimizer(pretrained.pretrained_path(name))
    shipped = from_dict(MetaTrainConfig, drop_runtime_fields(loaded.meta_train))
    stages = [adjust(stage) for stage in recipe(name)] if meta_train else []
    if stages and stages[0].init_from:
        raise UsageError(f"The recipe of {name} starts from {stages[0].init_from!r}, not from scratch (its first "
                         "stages were not recorded); reproduce mnist without --meta-train, or meta-train it yourself")
    meta = stages[-1] if stages else shipped
    if meta.task.name != "mnist":
        raise UsageError(f"reproduce mnist needs an MNIST optimizer; {name} was meta-trained on {meta.task.name}")
    check_seeds(meta, evaluation)
    for stage in stages:
        check_runtime(stage, runtime)
        check_task(stage.task, data_dir, runtime.device)
    check_task(meta.task, data_dir, runtime.device)
    records = [run_record(argv, runtime, stage if index == 0 else None) for index, stage in enumerate(stages)]
    with run_directory(run_dir, overwrite) as path:
        stages = _chained(stages, path)  # each stage from the one before, as it will run
        meta = stages[-1] if stages else shipped
        config = {"meta_train": to_dict(meta), "evaluation": to_dict(evaluation)}
        write_json(path / "config.json", config)
        write_json(path / "run.json", run_record(argv, runtime))
        if progress:
            print("config:", json.dumps(config), flush=True)
        if stages:
            learned = _meta_train_stages(stages, records, runtime, path, data_dir, progress)
            source = f"meta-trained in this run ({path}) by the recipe of {name}"
        else:
            learned, source = (loaded.meta_params, loaded.config), f"pretrained '{name}' shipped in the package"
        table = run_mnist_experiments(learned, meta, evaluation, runtime, path, data_dir, command_line(argv),
                                      source, progress)
    return f"{table}\nreport: {path / 'results.md'}, figure: {path / 'experiments.png'}"


def _chained(stages: list[MetaTrainConfig], path: pathlib.Path) -> list[MetaTrainConfig]:
    """The stages with every one after the first starting from the best optimizer of the one
    before, meta-trained in path/stage1, path/stage2, ..."""
    return [stage if number == 1 else dataclasses.replace(stage, init_from=str(path / f"stage{number - 1}" / "checkpoint.pt"))
            for number, stage in enumerate(stages, 1)]


def _meta_train_stages(stages, records, runtime, path: pathlib.Path, data_dir, progress):
    """Meta-train every stage (`_chained`) in a directory of its own; the last one's best
    optimizer."""
    for number, (stage, record) in enumerate(zip(stages, records), 1):
        stage_dir = path / f"stage{number}"
        stage_dir.mkdir(exist_ok=True)
        if progress:
            print(f"meta-training stage {number} of {len(stages)} in {stage_dir}", flush=True)
        result = start_meta_training(stage, runtime, stage_dir, record, data_dir, progress,
                                     {"meta_train": to_dict(stage)})
        if progress:
            print(f"stage {number}: {result.seconds:.0f} s, best validation loss {result.best_validation:.4g}", flush=True)
    return result.best_meta_params, stages[-1].optimizer


__all__ = ["EXPERIMENTS", "MNIST", "QUADRATIC", "REPRODUCE_OPTIMIZER", "reproduce_mnist", "reproduce_quadratic"]
