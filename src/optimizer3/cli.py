"""The `optimizer3` command: meta-train, evaluate, reproduce, benchmark, list-pretrained, export.

Every field of the config dataclasses is a flag (`flags`); the paper's values are the defaults.
A problem the user can fix (an `Optimizer3Error`) ends with one line on stderr and exit status
2, before any file is written; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

# Before torch is imported: torch then backs its CPU tensors of 2 MB and more with transparent
# huge pages, so that a fresh large tensor (an evaluation's minibatches of MNIST images, 40 MB a
# step) costs a few page faults instead of thousands. THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse  # noqa: E402 - after the allocator setting
import dataclasses
import pathlib
import sys
from typing import NoReturn

import torch

from optimizer3 import __version__, pretrained
from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import CheckpointError, Optimizer3Error, UsageError
from optimizer3.evaluation.config import EvaluationConfig
from optimizer3.evaluation.benchmark import BenchmarkConfig
from optimizer3.evaluation.benchmark_report import overall_lines
from optimizer3.experiments import benchmark, commands, general, reproduce
from optimizer3 import flags
from optimizer3.flags import (
    Parser, add_common, add_config_arguments, add_config_file, add_experiment_flags, config_from_args, given_flags,
    load_config_file,
)
from optimizer3.learned.files import drop_runtime_fields, load_learned_optimizer
from optimizer3.learned.mlp import MLPOptimizerConfig
from optimizer3.meta.config import MetaTrainConfig, PESTrainConfig
from optimizer3.meta.distributed import launched_size, leave_launched_run
from optimizer3.meta.export import CardText, export_pretrained
from optimizer3.meta.trainer import MetaTrainingInterrupted
from optimizer3.runtime import RuntimeConfig, apply_threads, check_compiler
from optimizer3.tasks import TaskConfig, suite

SIGPIPE_STATUS = 128 + 13  # what a shell reports for a command that SIGPIPE ended
EVALUATION_RUNTIME = ("device", "threads", "workers", "compile")
# The benchmark's parts are independent: by default one worker process per core (at most 4).
BENCHMARK_RUNTIME = RuntimeConfig(workers=max(1, min(4, os.cpu_count() or 1)))


def _runtime(args: argparse.Namespace) -> RuntimeConfig:
    return config_from_args(RuntimeConfig, args, RuntimeConfig())


def command_meta_train(args: argparse.Namespace) -> None:
    runtime, progress = _runtime(args), not args.quiet
    if args.resume:
        given = given_flags(args, MetaTrainConfig) + [flag for flag in ("--config", "--run-dir", "--overwrite")
                                                      if getattr(args, flag[2:].replace("-", "_"))]
        if given:
            raise UsageError(f"--resume continues a run with its own experiment settings; drop {', '.join(given)} "
                             "(only the flags of how it computes may change)")
        if general.is_general_run(pathlib.Path(args.resume)):
            raise UsageError(f"{args.resume} is a reproduce general run; continue it with the same reproduce general "
                             "command")
        result = commands.resume_command(args.resume, runtime, args.data_dir, progress, args.argv)
        run_dir = args.resume
    else:
        if not args.run_dir:
            raise UsageError("meta-train needs --run-dir (a new run) or --resume RUN_DIR (an interrupted one)")
        preset = load_config_file(args.config, {"meta_train": (MetaTrainConfig, MetaTrainConfig())})["meta_train"]
        config = config_from_args(MetaTrainConfig, args, preset)
        result = commands.meta_train_command(config, runtime, args.run_dir, args.overwrite, args.data_dir,
                                             progress, args.argv)
        run_dir = args.run_dir
    if result is not None:
        print(f"best validation loss {result.best_validation:.4g} after {result.seconds:.0f} s; "
              f"checkpoint: {pathlib.Path(run_dir) / 'checkpoint.pt'}")


def evaluation_task(args: argparse.Namespace, trained: TaskConfig) -> TaskConfig:
    """The task that `evaluate` tests on: the training task with the task flags given replaced.
    `--hidden` without `--mix-hidden` names the one architecture to test."""
    task = config_from_args(TaskConfig, args, trained)
    if args.hidden is not None and args.mix_hidden is None:
        task = dataclasses.replace(task, mix_hidden=())
    return task


def command_evaluate(args: argparse.Namespace) -> None:
    source = pretrained.pretrained_path(args.pretrained) if args.pretrained else pathlib.Path(args.checkpoint)
    loaded = load_learned_optimizer(source)
    if isinstance(loaded.config, MLPOptimizerConfig):
        raise UsageError(f"{source} is a per-parameter MLP optimizer, meta-trained on a mix of tasks; evaluate it "
                         f"with optimizer3 benchmark --checkpoint {source}")
    if loaded.meta_train is None:
        raise UsageError(f"{source} does not record what it was meta-trained on (task, horizon, seeds); "
                         "evaluate a checkpoint or an exported optimizer instead")
    try:
        meta = from_dict(MetaTrainConfig, drop_runtime_fields(loaded.meta_train))
    except UsageError as error:
        raise CheckpointError(f"{source} records an invalid meta-training config: {error}") from None
    evaluation = config_from_args(EvaluationConfig, args, EvaluationConfig())
    task, runtime = evaluation_task(args, meta.task), _runtime(args)
    commands.check_seeds(meta, evaluation)
    commands.check_task(task, args.data_dir, runtime.device)
    with commands.run_directory(args.run_dir, args.overwrite) as path:
        config = {"meta_train": to_dict(meta), "task": to_dict(task), "evaluation": to_dict(evaluation),
                  "learned_optimizer": args.pretrained or str(source)}
        _, table = commands.evaluate_learned(
            (loaded.meta_params, loaded.config), task, meta.horizon, meta.validation_seed, evaluation, runtime,
            path, args.data_dir, not args.quiet, config, f"{task.name}: learned vs tuned baselines", args.argv)
    print(table)


def command_reproduce(args: argparse.Namespace) -> None:
    runtime, progress = _runtime(args), not args.quiet
    if args.experiment == "general":
        config = config_from_args(PESTrainConfig, args, PESTrainConfig())
        print(general.reproduce_general(config, runtime, BenchmarkConfig(), runtime, args.run_dir or "runs/general",
                                        args.overwrite, args.long, args.quick, args.meta_only, args.data_dir, progress,
                                        args.argv))
        return
    if args.experiment == "quadratic":
        presets = load_config_file(args.config, {"meta_train": (MetaTrainConfig, reproduce.QUADRATIC[0]),
                                                 "evaluation": (EvaluationConfig, reproduce.QUADRATIC[1])})
        meta = config_from_args(MetaTrainConfig, args, presets["meta_train"])
        evaluation = config_from_args(EvaluationConfig, args, presets["evaluation"])
        print(reproduce.reproduce_quadratic(meta, evaluation, runtime, args.run_dir or "runs/quadratic",
                                            args.overwrite, args.data_dir, progress, args.argv))
        return
    given = given_flags(args, MetaTrainConfig)
    if given and not args.meta_train:
        raise UsageError(f"{', '.join(given)} change meta-training: add --meta-train to meta-train a new "
                         f"optimizer, or drop them to use the shipped one ({args.pretrained})")
    if args.steps:
        raise UsageError(f"Invalid --steps {args.steps} for reproduce mnist: the experiments run the "
                         "meta-training horizon and twice it; drop --steps")
    evaluation = config_from_args(EvaluationConfig, args, reproduce.MNIST[1])
    print(reproduce.reproduce_mnist(
        args.pretrained, args.meta_train, lambda stage: config_from_args(MetaTrainConfig, args, stage), evaluation,
        runtime, args.run_dir or "runs/mnist-experiments", args.overwrite, args.data_dir, progress, args.argv))


def command_benchmark(args: argparse.Namespace) -> None:
    config = config_from_args(BenchmarkConfig, args, BenchmarkConfig())
    if "--baselines" not in given_flags(args, BenchmarkConfig):  # the default set: what is installed
        config = benchmark.installed_baselines(config)
    learned = benchmark.load_learned(args.pretrained, args.checkpoint, config.test_seed)
    runtime = config_from_args(RuntimeConfig, args, BENCHMARK_RUNTIME)
    if runtime.device != "cpu" and args.workers is None:  # one GPU: one process
        runtime = dataclasses.replace(runtime, workers=1)
    results = benchmark.benchmark_command(suite.select(args.tasks, args.long), learned, config, runtime,
                                          args.run_dir or "runs/benchmark", args.overwrite, args.quick,
                                          args.data_dir, not args.quiet, args.argv)
    print("\n".join(overall_lines(results) or ["baselines only: no learned optimizer given"]))


def command_list_pretrained(args: argparse.Namespace) -> None:
    cards = [pretrained.describe(pretrained.load_card(name)) for name in pretrained.available()]
    print("\n\n".join([pretrained.GUIDE, *cards]))


def command_export(args: argparse.Namespace) -> None:
    run_dir = pathlib.Path(args.run_dir)
    if general.is_general_run(run_dir):  # its benchmark is its evaluation
        weights, card = general.export_general(run_dir, args.name, pathlib.Path(args.out), args.purpose,
                                               args.description, tuple(args.known_failure), args.overwrite)
        print(f"wrote {weights} and {card}")
        return
    text = CardText(args.purpose, args.description, tuple(args.known_failure))
    weights, card = export_pretrained(run_dir, args.name, pathlib.Path(args.evaluation or run_dir),
                                      pathlib.Path(args.out), text, overwrite=args.overwrite)
    print(f"wrote {weights} and {card}")


def build_parser() -> Parser:
    parser = Parser(prog="optimizer3", description="Learned optimizers for PyTorch: meta-train a learned "
                    "optimizer and compare it with tuned hand-designed ones.")
    parser.add_argument("--version", action="version", version=f"optimizer3 {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    train = sub.add_parser("meta-train", help="meta-train a learned optimizer (or resume a run)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint, with "
                       "its own experiment settings (the flags of how it computes may change)")
    add_common(train, "directory of the new run: checkpoint, metrics, config.json, run.json")
    add_config_file(train)
    add_experiment_flags(train, MetaTrainConfig(), None)
    add_config_arguments(train, RuntimeConfig, RuntimeConfig(), "how it computes")
    train.set_defaults(handler=command_meta_train)

    evaluate = sub.add_parser("evaluate", help="compare a learned optimizer with tuned baselines on test problems",
                              epilog="Task flags left out keep the optimizer's training task; given, they test how it "
                              "generalizes (a bigger --dim, another --hidden or --activation).")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint.pt of a meta-train run, or a learned-optimizer file")
    source.add_argument("--pretrained", metavar="NAME", help="a shipped pretrained optimizer (list-pretrained)")
    add_common(evaluate, "directory for results.json, results.md and loss_curves.png", run_dir_required=True)
    add_config_arguments(evaluate, TaskConfig, None, "task", default_text="the optimizer's training task's")
    add_config_arguments(evaluate, EvaluationConfig, EvaluationConfig(), "evaluation")
    add_config_arguments(evaluate, RuntimeConfig, RuntimeConfig(), "how it computes", only=EVALUATION_RUNTIME)
    evaluate.set_defaults(handler=command_evaluate)

    again = sub.add_parser("reproduce", help="one of the paper's experiments, end to end")
    experiments = again.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT", parser_class=Parser)
    quadratic = experiments.add_parser("quadratic", help="meta-train on random quadratics, then compare with the "
                                       "tuned baselines on 1,000 test problems (1 to 3 minutes)")
    add_common(quadratic, "directory of the run (default: runs/quadratic)")
    add_config_file(quadratic)
    add_experiment_flags(quadratic, reproduce.QUADRATIC[0], reproduce.QUADRATIC[1],
                         task_fields=flags.QUADRATIC_TASK_FIELDS)
    add_config_arguments(quadratic, RuntimeConfig, RuntimeConfig(), "how it computes")
    mnist = experiments.add_parser("mnist", help="the five MNIST experiments with a shipped optimizer (or one "
                                   "meta-trained here by its recipe)")
    mnist.add_argument("--pretrained", metavar="NAME", default=reproduce.REPRODUCE_OPTIMIZER,
                       help=f"the shipped optimizer (default: {reproduce.REPRODUCE_OPTIMIZER})")
    mnist.add_argument("--meta-train", action="store_true", help="meta-train a new optimizer first, from scratch, "
                       "by every stage of the shipped one's recipe; the meta-training flags given change every stage")
    add_common(mnist, "directory of the run (default: runs/mnist-experiments)")
    add_experiment_flags(mnist, None, reproduce.MNIST[1], text="the recipe's", task_fields=flags.MNIST_TASK_FIELDS)
    add_config_arguments(mnist, RuntimeConfig, RuntimeConfig(), "how it computes")
    pes_run = experiments.add_parser("general", help="meta-train the per-parameter MLP optimizer from scratch by PES "
                                     "on the benchmark's meta-training tasks, then benchmark it on the held-out ones")
    add_common(pes_run, "directory of the run (default: runs/general); the same command in the same directory "
               "continues an interrupted run")
    pes_run.add_argument("--long", action="store_true", help="benchmark the long-horizon held-out variants too")
    pes_run.add_argument("--meta-only", action="store_true", help="meta-train (or continue) and write general.pt, "
                         "without the benchmark")
    pes_run.add_argument("--quick", action="store_true", help="benchmark every held-out task tiny (the benchmark's "
                         "--quick): a smoke test")
    add_config_arguments(pes_run, PESTrainConfig, PESTrainConfig(), "PES meta-training and architecture")
    add_config_arguments(pes_run, RuntimeConfig, RuntimeConfig(), "how it computes", only=("device", "threads", "workers"))
    again.set_defaults(handler=command_reproduce)

    bench = sub.add_parser("benchmark", help="learned optimizers and tuned baselines on every task family: where "
                           "does each break down", epilog=suite.split_text())
    bench.add_argument("--pretrained", metavar="NAME", action="append", default=[],
                       help="a shipped pretrained optimizer (repeat for several)")
    bench.add_argument("--checkpoint", metavar="PATH", action="append", default=[],
                       help="a meta-training checkpoint or learned-optimizer file (repeat for several)")
    bench.add_argument("--tasks", metavar="LIST", help="tasks or families joined by commas (default: the whole "
                       f"suite); families: {', '.join(suite.FAMILIES)}")
    bench.add_argument("--long", action="store_true", help="add the long-horizon variants (10x the steps)")
    bench.add_argument("--quick", action="store_true", help="every task tiny: a smoke test of a minute or two")
    add_common(bench, "directory of the benchmark (default: runs/benchmark); the same command in the same "
               "directory continues an interrupted run")
    add_config_arguments(bench, BenchmarkConfig, BenchmarkConfig(), "benchmark")
    add_config_arguments(bench, RuntimeConfig, BENCHMARK_RUNTIME, "how it computes", only=("device", "threads", "workers"))
    bench.set_defaults(handler=command_benchmark)

    listing = sub.add_parser("list-pretrained", help="the shipped optimizers: which to use, and where each fails")
    listing.set_defaults(handler=command_list_pretrained)

    export = sub.add_parser("export", help="write a run's best optimizer and its card (the pretrained format)")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a meta-train or reproduce general run directory")
    export.add_argument("--name", required=True, help="name of the pretrained optimizer")
    export.add_argument("--evaluation", metavar="DIR", help="run directory of an evaluation of this run (default: "
                        "RUN_DIR, as reproduce quadratic writes both)")
    export.add_argument("--out", required=True, help="directory for NAME.pt and NAME.json")
    export.add_argument("--purpose", required=True, help="one line: what it is for, for list-pretrained")
    export.add_argument("--description", required=True, help="one line: how it was made")
    export.add_argument("--known-failure", action="append", default=[], metavar="TEXT",
                        help="where it is known to fail (repeat for several)")
    export.add_argument("--overwrite", action="store_true", help="replace existing files")
    export.set_defaults(handler=command_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    command = f"optimizer3 {args.command}" + (f" {args.experiment}" if args.command == "reproduce" else "")
    threads = torch.get_num_threads()  # given back at the end: a program may call main and go on
    try:
        if hasattr(args, "threads"):
            apply_threads(_runtime(args))
        if getattr(args, "compile", None):
            check_compiler()
        if launched_size() > 1 and args.handler is not command_meta_train:
            raise UsageError(f"Under a launcher of {launched_size()} processes (torchrun) only meta-train runs; "
                             "run this command on its own, or with --workers on this machine")
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
    except Optimizer3Error as error:
        hint = f" (see '{command} --help')" if isinstance(error, UsageError) else ""
        print(f"optimizer3: error: {error}{hint}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
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
