"""The `optimizer3` command: meta-train, evaluate, reproduce.

Every field of the config dataclasses is a flag (see `flags`); the paper's values are the
defaults. Bad input ends with one line on stderr and exit status 2, before any file is written.
"""

from __future__ import annotations

import os

# Before torch is imported: torch then backs its CPU tensors of 2 MB and more with transparent
# huge pages, so that a fresh large tensor (an evaluation's 100 minibatches of MNIST images,
# 40 MB each step) costs a few page faults instead of ten thousand (BENCHMARKS.md, "Wall time
# of reproduce mnist"). THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402 - after the allocator setting
import dataclasses
import json
import pathlib
import shutil
import sys
from typing import Any, NoReturn

import torch

from optimizer3.config import EvaluationConfig, MetaTrainConfig, to_dict
from optimizer3.errors import Optimizer3Error, RunDirectoryError, UsageError
from optimizer3.evaluate import Comparison
from optimizer3.experiments import MNIST_EVALUATION, REPRODUCE_OPTIMIZER, run_mnist_experiments
from optimizer3.files import write_text_atomic
from optimizer3.flags import (
    Parser, add_config_arguments, config_from_args, given_config_flags, load_config_file,
)
from optimizer3 import pretrained
from optimizer3.meta.checkpoint import load_checkpoint, load_learned_optimizer, meta_params_digest
from optimizer3.meta.distributed import (check_workers, init_from_environment, launched_rank, launched_size,
                                         leave_launched_run)
from optimizer3.meta.trainer import MetaTrainingInterrupted, meta_train, starting_meta_params
from optimizer3.provenance import command_line, provenance
from optimizer3.report import write_results
from optimizer3.tasks import TaskConfig, make_task_family
from optimizer3.workers import compare_tasks

EXPERIMENTS = ("quadratic", "mnist")
SIGPIPE_STATUS = 128 + 13  # what a shell reports for a command that SIGPIPE ended


def prepare_run_dir(path: pathlib.Path, overwrite: bool) -> pathlib.Path:
    """Create the run directory; refuse one that holds files unless `overwrite`."""
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"Run directory {path} is a file; choose another --run-dir")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunDirectoryError(
            f"Run directory {path} already exists and is not empty; pass --overwrite to replace "
            "its results or choose another --run-dir"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirectoryError(
            f"Cannot create run directory {path}: {error.strerror}; choose another --run-dir"
        ) from None
    return path


def _write_json(path: pathlib.Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def _check_seeds(meta: MetaTrainConfig, evaluation: EvaluationConfig) -> None:
    if evaluation.test_seed in (meta.seed, meta.validation_seed):
        raise UsageError(
            f"Invalid test_seed: {evaluation.test_seed} equals the training or validation seed; "
            "test problems need a seed of their own"
        )


def _check_task(task: TaskConfig, data_dir: str | None, *devices: str) -> None:
    """Build the task's families on each device now, so that missing data, a bad setting (a
    batch larger than the data) or a device this machine lacks stops the command before its
    run directory is created."""
    for device in set(devices):
        for split in ("train", "heldout"):
            make_task_family(task, split, data_dir, device)


def _evaluate(
    learned: tuple | None,
    task: TaskConfig,
    horizon: int,
    tuning_seed: int,
    evaluation: EvaluationConfig,
    data_dir: str | None,
) -> Comparison:
    steps = evaluation.steps or horizon
    return compare_tasks(learned, [(task, (steps,))], evaluation, tuning_seed, data_dir)[0][steps]


# How a run computes, not what: a resumed run may change these (its meta-gradients agree to
# rounding, or with --matmul-dtype to bfloat16's precision), and run.json records the change.
RESUME_EXECUTION_SETTINGS = ("device", "compile", "recompute_every", "matmul_dtype", "workers")


def command_resume(args: argparse.Namespace) -> None:
    execution = {f"--{name.replace('_', '-')}" for name in RESUME_EXECUTION_SETTINGS}
    given = [flag for flag in given_config_flags(args, MetaTrainConfig) if flag not in execution]
    given += ["--config"] if args.config else []
    if given:
        raise UsageError(f"--resume continues a run with its stored settings; drop {', '.join(given)} "
                         f"(only {', '.join(sorted(execution))} may change)")
    run_dir = pathlib.Path(args.resume)
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    stored: MetaTrainConfig = checkpoint["config"]
    changes = {name: getattr(args, name) for name in RESUME_EXECUTION_SETTINGS
               if getattr(args, name, None) is not None and getattr(args, name) != getattr(stored, name)}
    # The run continues with the changed settings, not bit for bit (e.g. on the CPU a run begun on a GPU).
    config = _launcher_workers(dataclasses.replace(stored, **changes), args)
    if checkpoint["trajectory"] >= config.trajectories:
        print(f"{run_dir} is complete: {checkpoint['trajectory']} of {config.trajectories} trajectories")
        return
    _check_task(config.task, args.data_dir, config.device)
    if launched_rank() != 0:  # a torchrun process but the first: its share, quietly
        init_from_environment()
        meta_train(config, None, progress=False, data_dir=args.data_dir, resume=checkpoint)
        return
    if changes:
        _record_resume(run_dir, args, checkpoint["trajectory"], {k: [getattr(stored, k), v] for k, v in changes.items()})
    init_from_environment()
    changed = "".join(f", {name} {getattr(stored, name)} -> {value}" for name, value in changes.items())
    print(f"resuming {run_dir} at trajectory {checkpoint['trajectory']} of {config.trajectories}{changed}")
    result = meta_train(config, run_dir, progress=not args.quiet, data_dir=args.data_dir, resume=checkpoint)
    print(f"best validation loss {result.best_validation:.4g}; checkpoint: {run_dir / 'checkpoint.pt'}")


def _record_resume(run_dir: pathlib.Path, args: argparse.Namespace, trajectory: int, changed: dict[str, Any]) -> None:
    """Append to run.json's "resumes" the command that changed how a run computes, and from
    which trajectory on (`changed`: setting -> [before, after])."""
    path = run_dir / "run.json"
    if not path.is_file():
        return
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot read {path}: {error}; restore it or resume without changing settings") from None
    entry = {**provenance(args.argv), "from_trajectory": trajectory, "changed": changed}
    record["resumes"] = [*record.get("resumes", []), entry]
    _write_json(path, record)


def _run_record(args: argparse.Namespace, config: MetaTrainConfig | None) -> dict[str, Any]:
    """run.json's content; checks `config.init_from` first, so that a bad start stops the
    command before anything is written."""
    record = provenance(args.argv)
    if config is not None and config.init_from:
        start = starting_meta_params(config, torch.Generator().manual_seed(config.seed))
        record["init_from_meta_params_sha256"] = meta_params_digest(start)
    return record


def _check_compiler() -> None:
    """torch.compile's CPU backend builds C++; say so in one line instead of a late traceback."""
    wanted = os.environ.get("CXX")
    found = shutil.which(wanted) if wanted else any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    if not found:
        missing = f"$CXX ({wanted!r}) was not found" if wanted else "none of g++, c++, clang++ is installed"
        raise UsageError(
            f"--compile needs a C++ compiler (torch.compile's CPU backend), but {missing}; "
            "install one or drop --compile"
        )


def _launcher_workers(config: MetaTrainConfig, args: argparse.Namespace) -> MetaTrainConfig:
    """Under a launcher (torchrun) its processes are the workers: a stored or preset --workers
    gives way to 1, and a given one is refused (`check_workers`)."""
    if launched_size() > 1 and args.workers is None:
        config = dataclasses.replace(config, workers=1)
    check_workers(config.workers)
    return config


def command_meta_train(args: argparse.Namespace) -> None:
    if args.resume:
        return command_resume(args)
    if not args.run_dir:
        raise UsageError("meta-train needs --run-dir (a new run) or --resume RUN_DIR (an interrupted one)")
    meta_preset, _ = load_config_file(args.config)
    config = _launcher_workers(config_from_args(MetaTrainConfig, args, meta_preset), args)
    _check_task(config.task, args.data_dir, config.device)
    run_info = _run_record(args, config)
    if launched_rank() != 0:  # a torchrun process but the first: its share of the run, quietly
        init_from_environment()
        meta_train(config, None, progress=False, data_dir=args.data_dir)
        return
    if launched_size() > 1:
        run_info["processes"] = launched_size()
    # Process 0 prepares the run directory before the group forms: if it cannot, the launcher
    # ends the other processes.
    run_dir = prepare_run_dir(pathlib.Path(args.run_dir), args.overwrite)
    print("config:", json.dumps({"meta_train": to_dict(config)}))
    _write_json(run_dir / "config.json", {"meta_train": to_dict(config)})
    _write_json(run_dir / "run.json", run_info)
    init_from_environment()
    result = meta_train(config, run_dir, progress=not args.quiet, data_dir=args.data_dir)
    print(f"best validation loss {result.best_validation:.4g} after {result.seconds:.0f} s; "
          f"checkpoint: {run_dir / 'checkpoint.pt'}")


def evaluation_task(args: argparse.Namespace, trained: TaskConfig) -> TaskConfig:
    """The task that `evaluate` tests on: the training task with the task flags given replaced.
    `--hidden` without `--mix-hidden` names the one architecture to test, so a training family
    that mixed architectures gives way to it."""
    task = config_from_args(TaskConfig, args, trained)
    if args.hidden is not None and args.mix_hidden is None:
        task = dataclasses.replace(task, mix_hidden=())
    return task


def command_evaluate(args: argparse.Namespace) -> None:
    if args.pretrained:
        source = pretrained.pretrained_path(args.pretrained)
    else:
        source = pathlib.Path(args.checkpoint)
    meta_params, meta_config = load_learned_optimizer(source)
    evaluation = config_from_args(EvaluationConfig, args, EvaluationConfig())
    task = evaluation_task(args, meta_config.task)
    _check_seeds(meta_config, evaluation)
    _check_task(task, args.data_dir, evaluation.device)
    run_dir = prepare_run_dir(pathlib.Path(args.run_dir), args.overwrite)
    print("config:", json.dumps({"task": to_dict(task), "evaluation": to_dict(evaluation)}))
    comparison = _evaluate((meta_params, meta_config.optimizer), task, meta_config.horizon,
                           meta_config.validation_seed, evaluation, args.data_dir)
    config = {"meta_train": to_dict(meta_config), "task": to_dict(task), "evaluation": to_dict(evaluation),
              "learned_optimizer": args.pretrained or str(source),
              "meta_params_sha256": meta_params_digest(meta_params)}
    title = f"{task.name}: learned vs tuned baselines"
    print(write_results(run_dir, comparison, config, title, command_line(args.argv)))


def command_reproduce_mnist(args: argparse.Namespace) -> None:
    name = args.pretrained or REPRODUCE_OPTIMIZER
    shipped_params, shipped = load_learned_optimizer(pretrained.pretrained_path(name))
    if args.config and not args.meta_train:
        raise UsageError("--config sets how to meta-train: add --meta-train, or drop --config to "
                         f"evaluate the shipped optimizer ({name}) with its own settings")
    if args.steps:
        raise UsageError(f"Invalid --steps {args.steps} for reproduce mnist: the experiments run the "
                         "meta-training horizon and twice it; drop --steps")
    if args.config:
        meta_preset, evaluation_preset = load_config_file(args.config)
    else:
        meta_preset, evaluation_preset = shipped, MNIST_EVALUATION
    execution = ("--compile", "--device", "--workers")  # shared with the evaluation
    given = [flag for flag in given_config_flags(args, MetaTrainConfig) if flag not in execution]
    if given and not args.meta_train:
        raise UsageError(f"{', '.join(given)} change meta-training: add --meta-train to meta-train a new "
                         f"optimizer, or drop them to use the shipped one ({name})")
    # Without --meta-train nothing is trained: --compile, --device and --workers are the evaluation's.
    meta_args = args if args.meta_train else argparse.Namespace(**{**vars(args), "workers": None})
    meta = config_from_args(MetaTrainConfig, meta_args, meta_preset)
    evaluation = config_from_args(EvaluationConfig, args, evaluation_preset)
    if not args.meta_train:
        meta = dataclasses.replace(meta, compile=meta_preset.compile, device=evaluation.device)
    if meta.task.name != "mnist":
        raise UsageError(f"reproduce mnist needs an MNIST optimizer; {name} was meta-trained on "
                         f"{meta.task.name}" if not args.meta_train else
                         f"reproduce mnist runs the mnist task, not --task {meta.task.name}")
    _check_seeds(meta, evaluation)
    _check_task(meta.task, args.data_dir, meta.device, evaluation.device)
    run_info = _run_record(args, meta if args.meta_train else None)
    run_dir = prepare_run_dir(pathlib.Path(args.run_dir or "runs/mnist-experiments"), args.overwrite)
    config = {"meta_train": to_dict(meta), "evaluation": to_dict(evaluation)}
    print("config:", json.dumps(config))
    _write_json(run_dir / "config.json", config)
    _write_json(run_dir / "run.json", run_info)
    if args.meta_train:
        result = meta_train(meta, run_dir, progress=not args.quiet, data_dir=args.data_dir)
        print(f"meta-training: {result.seconds:.0f} s, best validation loss {result.best_validation:.4g}")
        learned, source = (result.best_meta_params, meta.optimizer), f"meta-trained in this run ({run_dir})"
    else:
        learned, source = (shipped_params, shipped.optimizer), f"pretrained '{name}' shipped in the package"
    table = run_mnist_experiments(learned, meta, evaluation, run_dir, args.data_dir, command_line(args.argv), source)
    print(table)
    print(f"report: {run_dir / 'results.md'}, figure: {run_dir / 'experiments.png'}")


def command_list_pretrained(args: argparse.Namespace) -> None:
    names = pretrained.available()
    print("\n\n".join(pretrained.describe(pretrained.load_card(name)) for name in names) or "none")


def command_export(args: argparse.Namespace) -> None:
    run_dir = pathlib.Path(args.run_dir)
    weights, card = pretrained.export_pretrained(
        run_dir, args.name, pathlib.Path(args.evaluation or run_dir), pathlib.Path(args.out),
        args.description, overwrite=args.overwrite,
    )
    print(f"wrote {weights} and {card}")


def command_reproduce(args: argparse.Namespace) -> None:
    if args.experiment == "mnist":
        return command_reproduce_mnist(args)
    if args.pretrained or args.meta_train:
        raise UsageError("reproduce quadratic always meta-trains (in about two minutes); drop "
                         "--pretrained and --meta-train")
    meta_preset, evaluation_preset = load_config_file(args.config)
    meta = config_from_args(MetaTrainConfig, args, meta_preset)
    evaluation = config_from_args(EvaluationConfig, args, evaluation_preset)
    _check_seeds(meta, evaluation)
    if meta.task.name != args.experiment:
        raise UsageError(
            f"reproduce {args.experiment} runs the {args.experiment} task, not --task {meta.task.name}; "
            f"use meta-train and evaluate for other tasks"
        )
    _check_task(meta.task, args.data_dir, meta.device, evaluation.device)
    run_info = _run_record(args, meta)
    run_dir = prepare_run_dir(pathlib.Path(args.run_dir or f"runs/{args.experiment}"), args.overwrite)
    config = {"meta_train": to_dict(meta), "evaluation": to_dict(evaluation)}
    print("config:", json.dumps(config))
    _write_json(run_dir / "config.json", config)
    _write_json(run_dir / "run.json", run_info)
    result = meta_train(meta, run_dir, progress=not args.quiet, data_dir=args.data_dir)
    print(f"meta-training: {result.seconds:.0f} s, best validation loss {result.best_validation:.4g}")
    learned = (result.best_meta_params, meta.optimizer)
    comparison = _evaluate(learned, meta.task, meta.horizon, meta.validation_seed, evaluation, args.data_dir)
    extra = {"meta_training_seconds": result.seconds}
    title = f"Random {meta.task.dim}-dimensional quadratics"
    evaluated = {**config, "meta_params_sha256": meta_params_digest(result.best_meta_params)}
    print(write_results(run_dir, comparison, evaluated, title, command_line(args.argv), extra))
    for name, value in comparison.ratios().items():
        print(f"{name.replace('_', ' ')}: {value:.3f}")
    print(f"results: {run_dir / 'results.md'}, plot: {run_dir / 'loss_curves.png'}")


def _common(parser: argparse.ArgumentParser, run_dir_required: bool) -> None:
    parser.add_argument("--run-dir", required=run_dir_required,
                        help="directory for checkpoints and results" +
                        ("" if run_dir_required else " (default: runs/EXPERIMENT)"))
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a run directory that already holds files")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); results are "
                        "bit-identical only for the same thread count")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--data-dir", default=None,
                        help="where to look for data (MNIST) first; then $OPTIMIZER3_DATA_DIR, "
                        "then the user's cache directory, then download")


def _config_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="JSON",
                        help="start from the settings in this file (a run's config.json); "
                        "flags given here override it")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="optimizer3",
        description="Learned optimizers: meta-train a coordinatewise LSTM optimizer and compare "
        "it with tuned SGD, NAG, RMSprop and Adam.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )

    train = commands.add_parser("meta-train", help="meta-train a learned optimizer")
    _common(train, run_dir_required=False)
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue an interrupted run from its checkpoint, with its stored settings")
    _config_file(train)
    add_config_arguments(train, MetaTrainConfig, MetaTrainConfig())
    train.set_defaults(handler=command_meta_train)

    evaluate = commands.add_parser(
        "evaluate", help="compare a learned optimizer with tuned baselines on test problems"
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint.pt of a meta-train run, or a learned-optimizer file")
    source.add_argument("--pretrained", metavar="NAME", help="a pretrained optimizer shipped in the "
                        "package (see list-pretrained)")
    _common(evaluate, run_dir_required=True)
    add_config_arguments(evaluate, EvaluationConfig, EvaluationConfig())
    add_config_arguments(evaluate, TaskConfig, TaskConfig())
    evaluate.set_defaults(handler=command_evaluate)
    evaluate.epilog = ("Task flags left out keep the learned optimizer's training task; given, they "
                       "test how it generalizes (a bigger --dim, another --hidden or --activation; --hidden "
                       "without --mix-hidden tests that one architecture).")

    listing = commands.add_parser("list-pretrained", help="the pretrained optimizers shipped in the package")
    listing.set_defaults(handler=command_list_pretrained, threads=None)

    export = commands.add_parser(
        "export", help="write a meta-training run's best optimizer and its card (pretrained format)"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a meta-train or reproduce run directory")
    export.add_argument("--name", required=True, help="name of the pretrained optimizer")
    export.add_argument("--evaluation", metavar="DIR", help="run directory of an evaluation of this "
                        "run (default: RUN_DIR, as reproduce writes both)")
    export.add_argument("--out", required=True, help="directory for NAME.pt and NAME.json "
                        "(src/optimizer3/pretrained to ship it)")
    export.add_argument("--description", required=True, help="one line saying what it is for")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(handler=command_export, threads=None)

    reproduce = commands.add_parser(
        "reproduce", help="meta-train, tune, evaluate and report one of the paper's experiments"
    )
    reproduce.add_argument("experiment", choices=EXPERIMENTS, help="which experiment: quadratic "
                           "(meta-train and evaluate) or mnist (the five MNIST experiments)")
    reproduce.add_argument("--pretrained", metavar="NAME", help="mnist: the shipped learned optimizer "
                           f"to evaluate (default: {REPRODUCE_OPTIMIZER})")
    reproduce.add_argument("--meta-train", action="store_true", help="mnist: meta-train a new "
                           "optimizer first, with the shipped one's recipe (its card's command; for "
                           f"{REPRODUCE_OPTIMIZER} that fine-tunes mnist-mix8) unless flags change it")
    _common(reproduce, run_dir_required=False)
    _config_file(reproduce)
    add_config_arguments(reproduce, MetaTrainConfig, MetaTrainConfig())
    add_config_arguments(reproduce, EvaluationConfig, EvaluationConfig())
    reproduce.set_defaults(handler=command_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"Invalid --threads: {args.threads}; use 1 or more")
        torch.set_num_threads(args.threads)
    try:
        if getattr(args, "compile", None):
            _check_compiler()
        if launched_size() > 1 and args.handler is not command_meta_train:
            raise UsageError(f"Under a launcher of {launched_size()} processes (torchrun) only meta-train runs; "
                             "run this command on its own, or with --workers for meta-training on this machine")
        args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at exit
    except MetaTrainingInterrupted as error:  # checkpointed: say how to continue
        print(f"optimizer3: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("optimizer3: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output stopped (| head): no traceback, but the
        # work may be unfinished, so the status says so, as a shell's SIGPIPE would
        return SIGPIPE_STATUS
    except (Optimizer3Error, ValueError) as error:
        # ValueError covers the validation in config dataclasses and torch.optim's own checks.
        print(f"optimizer3: error: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> NoReturn:
    """The console command: `main`, then exit with its status."""
    status = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = SIGPIPE_STATUS
    if status == SIGPIPE_STATUS:
        # Python flushes stdout at exit, which would fail again into the closed pipe: point the
        # descriptor at devnull first. Done here, not in `main`, which a program (or a test
        # runner that captures output) may call without exiting.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if launched_size() > 1:  # under torchrun; here, not in `main`, which a program may call and go on
        leave_launched_run(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
