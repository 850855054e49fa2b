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
from typing import Any

from optimizer3.configs import to_dict
from optimizer3.errors import RunDirectoryError
from optimizer3.evaluation.benchmark import BenchmarkConfig
from optimizer3.experiments.commands import run_directory, write_json
from optimizer3.files import atomic_save
from optimizer3.learned.files import load_learned_optimizer, make_optimizer_file, read_plain_dict
from optimizer3.meta.config import PESTrainConfig
from optimizer3.meta.pes_trainer import pes_meta_train
from optimizer3.provenance import provenance
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks.suite import HELD_OUT, SUITE

NAME = "general"


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
                      data_dir: str | None, progress: bool, argv: list[str]) -> str:
    """Meta-train (or continue), write general.pt, benchmark it on the held-out tasks; the
    benchmark's report."""
    from optimizer3.experiments.benchmark import benchmark_command, installed_baselines

    path = pathlib.Path(run_dir)
    resume = _resume_state(path, config, overwrite) if path.is_dir() else None
    record = json.loads(json.dumps(provenance(argv), default=str))  # plain values: torch.load(weights_only=True)
    with run_directory(path, overwrite, resume=resume is not None) as path:
        if resume is None:
            write_json(path / "run.json", {"pes": to_dict(config), "runs": [{**record, "runtime": to_dict(runtime)}]})
        else:
            runs = json.loads((path / "run.json").read_text())
            runs["runs"].append({**record, "runtime": to_dict(runtime)})
            write_json(path / "run.json", runs)
        if progress:
            print("config:", json.dumps(to_dict(config)), flush=True)
        result = pes_meta_train(config, runtime, path, progress, data_dir, resume)
        seconds = sum(entry.get("seconds", 0.0) for entry in _chain_ends(path))
        stage = {"meta_train": to_dict(config), "estimator": "pes", "run": record, "seconds": seconds}
        atomic_save(make_optimizer_file(config.optimizer, result.best_meta_params, to_dict(config), [stage]),
                    path / f"{NAME}.pt")
        if progress:
            print(f"meta-training: {seconds:.0f} s, best validation {result.best_validation:.4f}; "
                  f"{result.skipped} chains skipped; wrote {path / f'{NAME}.pt'}", flush=True)
    loaded = load_learned_optimizer(path / f"{NAME}.pt")
    results = benchmark_command(held_out_tasks(long), {NAME: (loaded.meta_params, loaded.config)},
                                installed_baselines(benchmark), benchmark_runtime, str(path / "benchmark"),
                                False, quick, data_dir, progress, argv)
    return (path / "benchmark" / "results.md").read_text() if results else ""


def _chain_ends(path: pathlib.Path) -> list[dict[str, Any]]:
    """The last record of each process run of the meta-training (its seconds add up to the
    whole meta-training's time across interruptions)."""
    ends, last = [], None
    for line in (path / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "seconds" not in record:
            continue
        if last is not None and record["seconds"] < last["seconds"]:
            ends.append(last)
        last = record
    return ends + ([last] if last else [])
