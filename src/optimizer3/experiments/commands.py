"""What the commands do, given their configs: meta-train (or resume), evaluate, and the steps
that `reproduce` strings together from the same functions.

Every command that writes a run directory holds it (`run_directory`) for as long as it runs
and checks its inputs (data, devices, seeds) before it creates anything. A meta-training run
writes `config.json` (the experiment, which `--config` takes back) and `run.json` (the command,
code version, machine, date and runtime settings; one entry more for each resume); an
evaluation's results.json records the same of itself.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import torch

from optimizer3.configs import to_dict
from optimizer3.errors import RunDirectoryError, UsageError
from optimizer3.evaluation.compare import Comparison, compare
from optimizer3.evaluation.config import EvaluationConfig
from optimizer3.evaluation.report import write_results
from optimizer3.files import lock_run_dir, run_dir_files, write_text_atomic
from optimizer3.learned.files import meta_params_digest
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.distributed import check_size, check_workers, init_from_environment, launched_rank, launched_size
from optimizer3.meta.trainer import MetaTrainResult, meta_train, starting_meta_params
from optimizer3.provenance import command_line, provenance
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig, make_task_family


@contextlib.contextmanager
def run_directory(path: str | pathlib.Path, overwrite: bool, resume: bool = False) -> Iterator[pathlib.Path]:
    """Create (or, resuming, open) the run directory and hold it until the block ends.

    A directory that holds files is refused unless `overwrite` or `resume`; one that another
    process holds is refused even then.
    """
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"Run directory {path} is a file; choose another --run-dir")
    if resume and not path.is_dir():
        raise RunDirectoryError(f"No run directory {path} to resume; check the path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(f"Cannot create run directory {path}: {error.strerror}; choose another --run-dir") from None
    with lock_run_dir(path):
        if run_dir_files(path) and not (overwrite or resume):
            raise RunDirectoryError(f"Run directory {path} already exists and is not empty; pass --overwrite to "
                                    "replace its results or choose another --run-dir")
        yield path


def write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def check_seeds(meta: MetaTrainConfig, evaluation: EvaluationConfig) -> None:
    if evaluation.test_seed in (meta.seed, meta.validation_seed):
        raise UsageError(f"Invalid test_seed: {evaluation.test_seed} equals the training or validation seed; "
                         "test problems need a seed of their own")


def check_runtime(config: MetaTrainConfig, runtime: RuntimeConfig) -> None:
    """Refuse worker processes that a launcher's own make redundant, or more of them than a
    trajectory's problems or the validation problems: every process needs one of each."""
    check_workers(runtime.workers)
    if runtime.workers > 1:
        check_size(runtime.workers, config.problems, config.validation_problems)


def check_task(task: TaskConfig, data_dir: str | None, device: str) -> None:
    """Build the task's families now, so that missing data, a bad setting (a batch larger than
    the data) or a device this machine lacks stops the command before it writes anything."""
    for split in ("train", "heldout"):
        make_task_family(task, split, data_dir, device)


def run_record(argv: list[str], runtime: RuntimeConfig, config: MetaTrainConfig | None = None) -> dict[str, Any]:
    """run.json's content; checks `config.init_from` first, so that a bad start stops the
    command before anything is written."""
    record = {**provenance(argv), "runtime": to_dict(runtime)}
    if config is not None and config.init_from:
        start = starting_meta_params(config, torch.Generator().manual_seed(config.seed))
        record["init_from_meta_params_sha256"] = meta_params_digest(start)
    return record


def start_meta_training(
    config: MetaTrainConfig, runtime: RuntimeConfig, run_dir: pathlib.Path, record: dict[str, Any],
    data_dir: str | None, progress: bool, settings: dict[str, Any] | None = None,
) -> MetaTrainResult:
    """Write the run's config.json (`settings`, by default the meta-training config) and
    run.json (`record`) into the held `run_dir`, then meta-train."""
    if launched_size() > 1:
        record["processes"] = launched_size()
    write_json(run_dir / "config.json", settings or {"meta_train": to_dict(config)})
    write_json(run_dir / "run.json", record)
    init_from_environment()
    return meta_train(config, runtime, run_dir, progress=progress, data_dir=data_dir)


def meta_train_command(
    config: MetaTrainConfig, runtime: RuntimeConfig, run_dir: str, overwrite: bool, data_dir: str | None,
    progress: bool, argv: list[str],
) -> MetaTrainResult | None:
    """`optimizer3 meta-train`: a new run. Under a launcher (torchrun), process 0 prepares and
    writes the run directory and the others compute their share quietly."""
    check_runtime(config, runtime)
    check_task(config.task, data_dir, runtime.device)
    record = run_record(argv, runtime, config)
    if launched_rank() != 0:
        init_from_environment()
        meta_train(config, runtime, None, progress=False, data_dir=data_dir)
        return None
    # Process 0 holds the run directory before the group forms: if it cannot, the launcher
    # ends the other processes.
    with run_directory(run_dir, overwrite) as path:
        if progress:
            print("config:", json.dumps({"meta_train": to_dict(config)}), flush=True)
        return start_meta_training(config, runtime, path, record, data_dir, progress)


def resume_command(
    run_dir: str, runtime: RuntimeConfig, data_dir: str | None, progress: bool, argv: list[str]
) -> MetaTrainResult | None:
    """`optimizer3 meta-train --resume`: the run's own experiment, this command's runtime."""
    check_workers(runtime.workers)
    path = pathlib.Path(run_dir)
    if launched_rank() != 0:
        checkpoint = load_checkpoint(path / "checkpoint.pt")
        init_from_environment()
        return meta_train(checkpoint["config"], runtime, None, progress=False, data_dir=data_dir, resume=checkpoint)
    with run_directory(path, overwrite=False, resume=True):
        checkpoint = load_checkpoint(path / "checkpoint.pt")
        config: MetaTrainConfig = checkpoint["config"]
        if checkpoint["trajectory"] >= config.trajectories:
            print(f"{path} is complete: {checkpoint['trajectory']} of {config.trajectories} trajectories")
            return None
        check_runtime(config, runtime)
        check_task(config.task, data_dir, runtime.device)
        _record_resume(path, argv, runtime, checkpoint["trajectory"])
        init_from_environment()
        if progress:
            print(f"resuming {path} at trajectory {checkpoint['trajectory']} of {config.trajectories}", flush=True)
        return meta_train(config, runtime, path, progress=progress, data_dir=data_dir, resume=checkpoint)


def _record_resume(run_dir: pathlib.Path, argv: list[str], runtime: RuntimeConfig, trajectory: int) -> None:
    """Append to run.json's "resumes" this command, its runtime, and where it took over."""
    path = run_dir / "run.json"
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"Cannot read {path}: {error}; restore it, or delete it to resume without "
                                "a record of the run") from None
    entry = {**provenance(argv), "runtime": to_dict(runtime), "from_trajectory": trajectory}
    record["resumes"] = [*record.get("resumes", []), entry]
    write_json(path, record)


def evaluate_learned(
    learned: tuple[Any, Any] | None, task: TaskConfig, horizon: int, tuning_seed: int,
    evaluation: EvaluationConfig, runtime: RuntimeConfig, run_dir: pathlib.Path, data_dir: str | None,
    progress: bool, config: dict[str, Any], title: str, argv: list[str], extra: dict[str, Any] | None = None,
) -> tuple[Comparison, str]:
    """Compare `learned` with the tuned baselines on `task` for `evaluation.steps` (or
    `horizon`) steps and write results.json, results.md and loss_curves.png into `run_dir`;
    the comparison and its table."""
    steps = evaluation.steps or horizon
    comparison = compare(learned, task, evaluation, (steps,), tuning_seed, runtime, data_dir, progress)[steps]
    config = {**config, "runtime": to_dict(runtime)}
    if learned is not None:
        config["meta_params_sha256"] = meta_params_digest(learned[0])
    table = write_results(run_dir, comparison, config, title, command_line(argv), extra)
    return comparison, table
