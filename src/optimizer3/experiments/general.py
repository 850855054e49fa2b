"""`optimizer3 reproduce general`: meta-train the per-parameter MLP optimizer from scratch by
PES on the benchmark's meta-training tasks, then benchmark it on the held-out tasks.

The run directory holds checkpoint.pt and metrics.jsonl of the meta-training, general.pt (the
best optimizer by validation, in the learned-optimizer file format, with its recipe) and
benchmark/ (the benchmark's parts, results and report). The same command in the same directory
continues an interrupted run: the meta-training from its last checkpoint, exactly, and the
benchmark from its stored parts.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

from optimizer3.configs import to_dict
from optimizer3.errors import RunDirectoryError, UsageError
from optimizer3.evaluation.benchmark import BenchmarkConfig
from optimizer3.experiments.commands import run_directory, write_json
from optimizer3.files import atomic_save
from optimizer3.learned.files import load_learned_optimizer, make_optimizer_file, meta_params_digest, read_plain_dict
from optimizer3.meta.config import PESTrainConfig
from optimizer3.meta.pes_trainer import pes_meta_train
from optimizer3.provenance import provenance
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks.suite import HELD_OUT, SUITE

NAME = "general"


def is_general_run(path: pathlib.Path) -> bool:
    """Whether `path` is the directory of a `reproduce general` run."""
    try:
        return "pes" in json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        return False


def held_out_tasks(long: bool) -> tuple[str, ...]:
    """The benchmark's held-out tasks, with their long-horizon variants if `long`."""
    return tuple(name for name, task in SUITE.items() if task.split == HELD_OUT and (long or not task.long))


def _resume_state(path: pathlib.Path, config: PESTrainConfig, overwrite: bool) -> dict[str, Any] | None:
    """The checkpoint to continue from, if `path` holds one of this very run."""
    checkpoint = path / "checkpoint.pt"
    if overwrite or not checkpoint.is_file():
        return None
    data = read_plain_dict(checkpoint)
    if data.get("estimator") != "pes" or data.get("config") != to_dict(config):
        raise RunDirectoryError(f"{path} holds another run (other settings or estimator); pass --overwrite to "
                                "replace it, or choose another --run-dir")
    return data


def reproduce_general(config: PESTrainConfig, runtime: RuntimeConfig, benchmark: BenchmarkConfig,
                      benchmark_runtime: RuntimeConfig, run_dir: str, overwrite: bool, long: bool, quick: bool,
                      meta_only: bool, data_dir: str | None, progress: bool, argv: list[str]) -> str:
    """Meta-train (or continue), write general.pt, benchmark it on the held-out tasks (unless
    `meta_only`; `quick`: every task tiny, in benchmark-quick/); the benchmark's report, or a
    line saying where general.pt is."""
    from optimizer3.experiments.benchmark import benchmark_command, installed_baselines  # the benchmark imports much

    if runtime.workers > config.pairs:
        raise UsageError(f"Invalid workers: {runtime.workers} processes for {config.pairs} pairs; use at most one "
                         "process per pair")
    path = pathlib.Path(run_dir)
    resume = _resume_state(path, config, overwrite) if path.is_dir() else None
    record = {**json.loads(json.dumps(provenance(argv), default=str)), "runtime": to_dict(runtime)}
    with run_directory(path, overwrite, resume=resume is not None) as path:
        if resume is None:  # a fresh run: nothing of an earlier one may be resumed, exported or benchmarked
            for name in ("checkpoint.pt", "metrics.jsonl", f"{NAME}.pt"):
                (path / name).unlink(missing_ok=True)
            for name in ("benchmark", "benchmark-quick"):
                shutil.rmtree(path / name, ignore_errors=True)
            runs = {"pes": to_dict(config), "runs": [record]}
        else:
            runs = json.loads((path / "run.json").read_text())
            runs["runs"].append(record)
        write_json(path / "run.json", runs)
        if progress:
            print("config:", json.dumps(to_dict(config)), flush=True)
        result = pes_meta_train(config, runtime, path, progress, data_dir, resume)
        _write_optimizer(path, config, result, runs["runs"])
        if progress:
            print(f"meta-training: {result.seconds:.0f} s, best validation {result.best_validation:.4f}; "
                  f"{result.skipped} chains skipped; {path / f'{NAME}.pt'}", flush=True)
    if meta_only:
        return f"{path / f'{NAME}.pt'}: the best optimizer by validation"
    loaded = load_learned_optimizer(path / f"{NAME}.pt")
    folder = path / ("benchmark-quick" if quick else "benchmark")
    results = benchmark_command(held_out_tasks(long), {NAME: (loaded.meta_params, loaded.config)},
                                installed_baselines(benchmark), benchmark_runtime, str(folder), False, quick,
                                data_dir, progress, argv)
    return (folder / "results.md").read_text() if results else ""


def _write_optimizer(path: pathlib.Path, config: PESTrainConfig, result, runs: list[dict[str, Any]]) -> None:
    """general.pt, the run's best optimizer with its recipe (the command that started the run,
    those that continued it, and the meta-training time of all), unless it is there already;
    a new one makes the benchmark's stored parts of the old one go."""
    target = path / f"{NAME}.pt"
    if target.is_file():
        old = load_learned_optimizer(target)
        if meta_params_digest(old.meta_params) == meta_params_digest(result.best_meta_params):
            return
        for part in (path / "benchmark" / "parts").glob(f"*/{NAME}.json"):
            part.unlink()
    stage = {"meta_train": to_dict(config), "estimator": "pes", "run": runs[0],
             "continued_by": [run["command"] for run in runs[1:]], "seconds": result.seconds}
    atomic_save(make_optimizer_file(config.optimizer, result.best_meta_params, to_dict(config), [stage]), target)


def export_general(run_dir: pathlib.Path, name: str, out_dir: pathlib.Path, purpose: str, description: str,
                   known_failures: tuple[str, ...], overwrite: bool) -> tuple[pathlib.Path, pathlib.Path]:
    """`NAME.pt` and `NAME.json` (its card) from a `reproduce general` run and its benchmark."""
    from optimizer3 import pretrained
    from optimizer3.experiments.benchmark import card_summary
    from optimizer3.files import write_text_atomic

    if not name.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"Invalid pretrained name: {name!r}; use letters, digits, - and _")
    source = run_dir / f"{NAME}.pt"
    results_path = run_dir / "benchmark" / "results.json"
    if not source.is_file() or not results_path.is_file():
        raise RunDirectoryError(f"{run_dir} holds no finished reproduce general run ({source.name} and "
                                "benchmark/results.json); run it to the end first")
    loaded = load_learned_optimizer(source)
    digest = meta_params_digest(loaded.meta_params)
    results = json.loads(results_path.read_text())
    if results["meta_params_sha256"].get(NAME) != digest:
        raise RunDirectoryError(f"{results_path} benchmarked another {NAME}.pt than {source}; run the same "
                                "reproduce general command again to benchmark this one")
    checkpoint = read_plain_dict(run_dir / "checkpoint.pt")
    if meta_params_digest(checkpoint["best_meta_params"]) != digest:
        raise RunDirectoryError(f"{run_dir / 'checkpoint.pt'} is not the run that made {source}; run the same "
                                "reproduce general command again to write its optimizer")
    weights, card_path = out_dir / f"{name}.pt", out_dir / f"{name}.json"
    for path in (weights, card_path):
        if path.exists() and not overwrite:
            raise RunDirectoryError(f"{path} exists; pass --overwrite to replace it")
    stage = loaded.recipe[-1]
    card = {
        "name": name, "purpose": purpose, "known_failures": list(known_failures), "description": description,
        "file": weights.name, "sha256": None, "architecture": "mlp", "optimizer": to_dict(loaded.config),
        "meta_training": {**stage["run"], "continued_by": stage.get("continued_by", []),
                          "seed": loaded.meta_train["seed"], "estimator": "pes",
                          "meta_steps": f"{checkpoint['meta_step']} of {loaded.meta_train['meta_steps']}",
                          "seconds": stage["seconds"], "best_validation": checkpoint["best_validation"],
                          "skipped": checkpoint["skipped"], "tasks": list(loaded.meta_train["tasks"])},
        "recipe": [{"command": stage["run"]["command"], "seconds": stage["seconds"], "date": stage["run"]["date"]}],
        "benchmark": card_summary(results, NAME),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save(read_plain_dict(source), weights)
    card["sha256"] = pretrained.sha256(weights)
    write_text_atomic(card_path, json.dumps(card, indent=1) + "\n")
    return weights, card_path
