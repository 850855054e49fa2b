"""`optimizer3 benchmark`: every optimizer on the suite's tasks, resumable, with its report.

Each part (one optimizer on one task) is written to `RUN_DIR/parts/TASK/OPTIMIZER.json` as soon
as it is done; running the same command again in the same directory computes only the parts
that are missing, and adding a learned optimizer to a finished benchmark reuses its baselines.
A stored part whose settings differ from the command's (another suite size, seed or grid) is
refused rather than mixed in. The report: results.json (every number), results.md (the split,
the learned / best tuned ratios and every task's table) and benchmark.png.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
import sys
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from optimizer3.configs import to_dict
from optimizer3.errors import RunDirectoryError, UsageError
from optimizer3.evaluation.benchmark import (
    BenchmarkConfig, geometric_mean, overall, part_settings, run_part, summarize_task,
)
from optimizer3.evaluation.benchmark_report import markdown
from optimizer3.evaluation.compare import run_side_by_side
from optimizer3.evaluation.plotting import plot_benchmark
from optimizer3.evaluation.report import json_safe
from optimizer3.evaluation.runs import Learned
from optimizer3.experiments.commands import run_directory, write_json
from optimizer3.files import atomic_path, run_dir_files, write_text_atomic
from optimizer3 import pretrained
from optimizer3.learned.files import load_learned_optimizer, meta_params_digest
from optimizer3.optim.baselines import BASELINES
from optimizer3.provenance import describe_machine, provenance
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks.suite import HELD_OUT, SUITE, SuiteTask, split_text

MARKER = "benchmark.json"  # a run directory holding it is a benchmark's, and may be continued
QUICK = {"steps": 8, "problems": 4, "tuning_problems": 2}  # --quick: every task, tiny


def installed_baselines(config: BenchmarkConfig) -> BenchmarkConfig:
    """`config` without the baselines whose optional package is missing, said on stderr."""
    missing = [name for name in config.baselines if not BASELINES[name].available]
    if missing:
        print(f"optimizer3: leaving out {', '.join(missing)}: install them with pip install -e \".[lr-free]\"",
              file=sys.stderr)
    return dataclasses.replace(config, baselines=tuple(n for n in config.baselines if n not in missing))


def load_learned(names: list[str], paths: list[str], test_seed: int) -> dict[str, Learned]:
    """The learned optimizers to benchmark by label: shipped ones by name, files by their name
    (a checkpoint by its run directory's). One meta-trained on the test seed is refused."""
    learned = {}
    for source, path in [*((name, pretrained.pretrained_path(name)) for name in names),
                         *((path, pathlib.Path(path)) for path in paths)]:
        label = source if source in names else (path.parent.name if path.name == "checkpoint.pt" else path.stem)
        if label in learned or label in BASELINES:
            raise UsageError(f"Two optimizers are named {label!r}; give the file a name of its own")
        loaded = load_learned_optimizer(path)
        if test_seed in [(loaded.meta_train or {}).get(key) for key in ("seed", "validation_seed")]:
            raise UsageError(f"{source} was meta-trained with seed {test_seed}, the benchmark's test seed; "
                             "give --test-seed another value")
        learned[label] = (loaded.meta_params, loaded.config)
    return learned


def plan(names: tuple[str, ...], quick: bool) -> list[SuiteTask]:
    """The suite's tasks `names`, shrunk to a smoke test with `quick`."""
    tasks = [SUITE[name] for name in names]
    if quick:
        tasks = [task.scaled(QUICK["steps"] * (2 if task.long else 1), QUICK["problems"], QUICK["tuning_problems"])
                 for task in tasks]
    return tasks


def check_data(tasks: list[SuiteTask], data_dir: str | None, device: str) -> dict[str, tuple[int, float]]:
    """Build every task's family now, so that missing or corrupt data stops the command before
    it writes anything; each task's parameters per problem and seconds per problem-step (one
    timed step of two problems), from which the parts' costs are estimated."""
    probes = {}
    for task in tasks:
        problems = task.family_of(data_dir, device).sample(2, torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(0)
        params = problems.init(generator).requires_grad_()
        batch = problems.sample_batch(generator)
        began = time.perf_counter()
        problems.loss(params, batch).sum().backward()
        probes[task.name] = (problems.dim, (time.perf_counter() - began) / 2)
    return probes


def part_cost(task: SuiteTask, optimizer: str, probe: tuple[int, float], grid_points: int) -> float:
    """Roughly how long a part takes, to start the longest first: problem-steps times the
    model's cost, with a learned optimizer's own cost per coordinate (about 2 us on a CPU)."""
    dim, seconds = probe
    if optimizer not in BASELINES:
        return task.steps * task.problems * (seconds + 2e-6 * dim)
    tuning = task.tuning_problems * grid_points if BASELINES[optimizer].tuned else 0
    return task.steps * (task.problems + tuning) * seconds


def _job(name: str, steps: int, problems: int, tuning_problems: int, optimizer: str, learned: Learned | None,
         config: BenchmarkConfig, data_dir: str | None, device: str) -> dict[str, Any]:
    """`run_part` from picklable arguments (the suite's task by name), for worker processes."""
    task = SUITE[name].scaled(steps, problems, tuning_problems)
    return run_part(task, optimizer, learned, config, data_dir, device)


def _part_path(run_dir: pathlib.Path, task: str, optimizer: str) -> pathlib.Path:
    return run_dir / "parts" / task / f"{optimizer}.json"


def _stored(path: pathlib.Path, settings: dict[str, Any], digest: str | None) -> dict[str, Any] | None:
    """The part stored at `path`, if any; refused if it was computed with other settings."""
    if not path.is_file():
        return None
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunDirectoryError(f"Cannot read {path}: {error}; delete it to compute that part again") from None
    if part.get("settings") != json.loads(json.dumps(settings)) or part.get("meta_params_sha256") != digest:
        raise RunDirectoryError(
            f"{path} was computed with other settings or another learned optimizer of that name; "
            "use another --run-dir, or --overwrite to discard its parts")
    return part


def benchmark_command(
    names: tuple[str, ...], learned: dict[str, Learned], config: BenchmarkConfig, runtime: RuntimeConfig,
    run_dir: str, overwrite: bool, quick: bool, data_dir: str | None, progress: bool, argv: list[str],
) -> dict[str, Any]:
    """Run (or continue) the benchmark of `learned` (label -> optimizer) on the tasks `names`
    and write its report into `run_dir`; the results."""
    tasks = plan(names, quick)
    probes = check_data(tasks, data_dir, runtime.device)
    path = pathlib.Path(run_dir)
    is_benchmark = (path / MARKER).is_file()
    with run_directory(path, overwrite, resume=is_benchmark) as path:
        if overwrite and run_dir_files(path):
            shutil.rmtree(path / "parts", ignore_errors=True)
        digests = {label: meta_params_digest(optimizer[0]) for label, optimizer in learned.items()}
        stored, calls = _parts(tasks, learned, digests, config, runtime, path, data_dir)  # refuses before writing
        write_json(path / MARKER, {"benchmark": to_dict(config), "quick": quick})
        parts = _compute(tasks, learned, digests, config, runtime, path, progress, probes, stored, calls)
        results = assemble(tasks, parts, tuple(learned), config, {**provenance(argv), "runtime": to_dict(runtime)})
        results["meta_params_sha256"], results["quick"] = digests, quick
        write_report(path, results)
    return results


def _parts(tasks, learned, digests, config, runtime, run_dir, data_dir) -> tuple[dict, dict]:
    """The parts stored in `run_dir` (refused if computed with other settings), and a call for
    each part still missing."""
    optimizers = list(learned) + [name for name in config.baselines]
    parts, calls = {}, {}
    for task in tasks:
        for optimizer in optimizers:
            digest = digests.get(optimizer)
            stored = _stored(_part_path(run_dir, task.name, optimizer), part_settings(task, config, optimizer), digest)
            if stored is not None:
                parts[task.name, optimizer] = stored
            else:
                calls[task.name, optimizer] = functools.partial(
                    _job, task.name, task.steps, task.problems, task.tuning_problems, optimizer,
                    learned.get(optimizer), config, data_dir, runtime.device)
    return parts, calls


def _compute(tasks, learned, digests, config, runtime, run_dir, progress, probes, parts, calls) -> dict:
    """Every part: `parts` read back, `calls` computed and each stored as it arrives."""
    with tqdm(total=len(calls), desc="benchmark", unit="part", disable=not progress or not calls) as bar:
        def done(job: tuple[str, str], part: dict[str, Any]) -> None:
            if job[1] in digests:
                part["meta_params_sha256"] = digests[job[1]]
            target = _part_path(run_dir, *job)
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_text(json.dumps(json_safe(part)) + "\n")
            parts[job] = part
            bar.set_postfix_str(f"{job[1]} on {job[0]}")
            bar.update()

        # The costliest first, so that workers finish together.
        by_name, points = {task.name: task for task in tasks}, len(config.grid.exponents())
        order = sorted(calls, key=lambda job: part_cost(by_name[job[0]], job[1], probes[job[0]], points), reverse=True)
        if runtime.workers == 1:
            for job in order:
                done(job, calls[job]())
        else:  # each part stored as it arrives, so that an interrupted benchmark keeps it
            run_side_by_side(calls, order, runtime.workers, done)
    return parts


def assemble(tasks: list[SuiteTask], parts: dict, learned: tuple[str, ...], config: BenchmarkConfig,
             record: dict[str, Any]) -> dict[str, Any]:
    """results.json's content from every part."""
    optimizers = list(learned) + list(config.baselines)
    summaries = {}
    for task in tasks:
        summary = summarize_task({name: _inf(parts[task.name, name]) for name in optimizers}, learned, config)
        spec = {"family": task.family, "description": task.description, "split": task.split, "steps": task.steps,
                "problems": task.problems, "tuning_problems": task.tuning_problems, "long": task.long}
        curves = {name: parts[task.name, name].get("curve") for name in optimizers}
        summaries[task.name] = {"spec": spec, **summary, "curves": curves}
    splits = {task.name: task.split for task in tasks}
    result_overall = {label: overall(summaries, splits, label) for label in learned}
    for label in learned:  # the untuned references, over each split's tasks
        for split, entry in result_overall[label].items():
            names = [task.name for task in tasks if task.split == split]
            entry["vs_untuned"] = {
                other: geometric_mean([summaries[n]["ratios"][label][other]["ratio"] for n in names
                                   if summaries[n]["ratios"][label].get(other, {}).get("ratio") is not None])
                for other in config.baselines if not BASELINES[other].tuned}
    return {"learned": list(learned), "split": split_text(), "record": {**record, "machine_text": describe_machine(record["machine"])},
            "config": {**to_dict(config), "tuned": list(config.tuned),
                       "untuned": [n for n in config.baselines if not BASELINES[n].tuned]},
            "tasks": summaries, "overall": result_overall}


def _inf(part: dict[str, Any]) -> dict[str, Any]:
    """A part read back from JSON, whose infinities were written as null."""
    if "final" in part:
        part = {**part, "final": [float("inf") if v is None else v for v in part["final"]]}
    return part


def figure_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's rows: tasks grouped by family, in the suite's order."""
    tasks = results["tasks"]
    families = list(dict.fromkeys(task["spec"]["family"] for task in tasks.values()))
    rows = []
    for family in families:
        for name, task in tasks.items():
            if task["spec"]["family"] != family:
                continue
            ratios, failed = {}, {}
            for label in results["learned"]:
                entry = task["optimizers"][label]
                if entry["failed"]:
                    failed[label] = f"{entry['failed']}/{entry['problems']}"
                ratio = task["ratios"][label].get("best_tuned")
                if ratio and not ratio.get("reference_failed"):  # infinities read back from JSON are null
                    ratios[label] = tuple(float("inf") if v is None else v for v in (ratio["ratio"], *ratio["ci"]))
                else:
                    ratios[label] = None
            rows.append({"name": name, "family": family, "held_out": task["spec"]["split"] == HELD_OUT,
                         "ratios": ratios, "failed": failed})
    return rows


def write_report(run_dir: pathlib.Path, results: dict[str, Any]) -> None:
    write_json(run_dir / "results.json", json_safe(results))
    write_text_atomic(run_dir / "results.md", markdown(results))
    with atomic_path(run_dir / "benchmark.png") as tmp:
        plot_benchmark(figure_rows(results), results["learned"], tmp,
                       "Benchmark: " + (", ".join(results["learned"]) or "baselines"))


def card_summary(results: dict[str, Any], label: str) -> dict[str, Any]:
    """What a card keeps of a benchmark of the optimizer `label`: the command, date and machine,
    per split the geometric mean and worst ratio to the best tuned baseline, failures and the
    tasks behind by more than 25%, and every task's ratio."""
    record = results["record"]
    keys = ("tasks", "geometric_mean_ratio", "worst_ratio", "failed_on", "behind_by_25_percent", "no_ratio",
            "vs_untuned", "geometric_mean_ratio_without_failures", "tasks_without_failures")
    return {
        "command": record["command"], "date": record["date"], "machine": record["machine_text"],
        "splits": {split: {key: entry[key] for key in keys} for split, entry in results["overall"][label].items()},
        "ratios": {name: (task["ratios"][label].get("best_tuned") or {}).get("ratio")
                   for name, task in results["tasks"].items()},
    }
