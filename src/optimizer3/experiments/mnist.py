"""The paper's MNIST experiments (Andrychowicz et al. 2016, section 3.2 and Figure 4).

One learned optimizer, meta-trained for `horizon` steps, against SGD, NAG, RMSprop and Adam
tuned per experiment by the shared protocol, on:
(a) the base network; (b) twice as many steps; (c) 40 hidden units; (d) two hidden layers;
(e) ReLU instead of sigmoid. Every experiment uses fresh held-out optimizee runs.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

from optimizer3.configs import to_dict
from optimizer3.evaluation.compare import LEARNED, Comparison, compare_tasks
from optimizer3.evaluation.config import EvaluationConfig, LearningRateGrid
from optimizer3.evaluation.plotting import plot_panels
from optimizer3.evaluation.report import json_safe, write_results
from optimizer3.evaluation.runs import Learned
from optimizer3.files import atomic_path, write_text_atomic
from optimizer3.learned.files import meta_params_digest
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.provenance import code_version, describe_machine, machine
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig
from optimizer3.tasks.mlp import activation_names, parse_hidden

# The shipped optimizer that `reproduce mnist` evaluates unless told otherwise: the best one on
# the paper's four sigmoid networks.
REPRODUCE_OPTIMIZER = "mnist-paper"

# Evaluation settings of `reproduce mnist`: 100 test runs per experiment (the minimum),
# baselines tuned on 16 validation runs over 1e-3 .. 10 (NAG's best rate on MNIST is near 1).
MNIST_EVALUATION = EvaluationConfig(
    test_problems=100, tuning_problems=16, grid=LearningRateGrid(lr_min=1e-3, lr_max=10.0)
)


@dataclasses.dataclass(frozen=True)
class Experiment:
    key: str
    title: str
    task: TaskConfig
    steps: int


# The paper's networks: the base one (one hidden layer of 20 units), a wider and a deeper one.
BASE_HIDDEN = (20,)
WIDE_HIDDEN = (40,)
DEEP_HIDDEN = (20, 20)


def mnist_experiments(trained: TaskConfig, horizon: int) -> list[Experiment]:
    """The five settings of the paper's MNIST experiments for an optimizer meta-trained on `trained`.

    The networks are the paper's whatever the optimizer was trained on; batch size and
    initialization are the training task's. A training family that mixes activations
    (`sigmoid,relu`) is evaluated on networks of its first one in (a) to (d), as the paper's
    base network has one kind of unit.
    """
    base = dataclasses.replace(trained, hidden=BASE_HIDDEN, mix_hidden=(),
                               activation=activation_names(trained.activation)[0])
    return [
        Experiment("a", f"(a) base network, {horizon} steps", base, horizon),
        Experiment("b", f"(b) base network, {2 * horizon} steps", base, 2 * horizon),
        Experiment("c", "(c) 40 hidden units", dataclasses.replace(base, hidden=WIDE_HIDDEN), horizon),
        Experiment("d", "(d) two hidden layers", dataclasses.replace(base, hidden=DEEP_HIDDEN), horizon),
        Experiment("e", "(e) ReLU activation", dataclasses.replace(base, activation="relu"), horizon),
    ]


def run_mnist_experiments(
    learned: Learned,
    meta: MetaTrainConfig,
    evaluation: EvaluationConfig,
    runtime: RuntimeConfig,
    run_dir: pathlib.Path,
    data_dir: str | None,
    command: str,
    learned_source: str,
    progress: bool = False,
) -> str:
    """Run the five experiments, write each one's results and the combined report; return it.

    Experiments on the same network, (a) and (b), share their runs: (a)'s are the first
    `horizon` steps of (b)'s, the same numbers as separate runs give. With `runtime.workers` > 1
    the optimizers run side by side (`evaluation.compare`).
    """
    experiments = mnist_experiments(meta.task, meta.horizon)
    groups: dict[TaskConfig, list[Experiment]] = {}
    for experiment in experiments:
        groups.setdefault(experiment.task, []).append(experiment)
    results = compare_tasks(learned, [(task, tuple(e.steps for e in group)) for task, group in groups.items()],
                            evaluation, meta.validation_seed, runtime, data_dir, progress)
    comparisons: dict[str, Comparison] = {}
    for by_steps, group in zip(results, groups.values()):
        for experiment in group:
            comparison = comparisons[experiment.key] = by_steps[experiment.steps]
            config = {"meta_train": to_dict(meta), "task": to_dict(experiment.task),
                      "evaluation": to_dict(evaluation), "runtime": to_dict(runtime),
                      "learned_optimizer": learned_source, "meta_params_sha256": meta_params_digest(learned[0])}
            (run_dir / experiment.key).mkdir(exist_ok=True)
            write_results(run_dir / experiment.key, comparison, config, f"MNIST {experiment.title}", command)
    outcomes = {experiment.key: (experiment, comparisons[experiment.key]) for experiment in experiments}
    return write_summary(run_dir, outcomes, evaluation, command, learned_source, training_note(meta.task, meta.init_from))


def training_note(task: TaskConfig, init_from: str | None = None) -> str:
    """Sentences for the report where the optimizer was meta-trained (or, from `init_from`,
    fine-tuned) on something other than the base network of sigmoid units, saying which
    experiments then test no generalization; else ''."""
    notes = []
    names = activation_names(task.activation)
    if len(names) > 1:
        note = (f"The learned optimizer was meta-trained on a family that mixes activations "
                f"(`--activation {task.activation}`): (a) to (d) use its first, {names[0]}")
        if "relu" in names:
            note += ", and (e) tests no generalization to ReLU units, which it saw in meta-training"
        notes.append(note + ".")
    architectures = list(dict.fromkeys([task.hidden, *map(parse_hidden, task.mix_hidden)]))
    if architectures != [BASE_HIDDEN]:
        flags = " ".join(map(str, task.hidden))
        if task.mix_hidden:
            trained_on = (f"a family that mixes architectures (`--hidden {flags} "
                          f"--mix-hidden {' '.join(task.mix_hidden)}`)")
        else:
            trained_on = f"784-{'-'.join(map(str, task.hidden))}-10 networks (`--hidden {flags}`)"
        how = f"fine-tuned from `{init_from}`" if init_from else "meta-trained"
        note = f"The learned optimizer was {how} on {trained_on}; (a), (b) and (e) use the paper's base network"
        if BASE_HIDDEN not in architectures:
            note += f", which {'the fine-tuning' if init_from else 'it'} did not see"
        seen = [title for title, sizes in (("(c)", WIDE_HIDDEN), ("(d)", DEEP_HIDDEN)) if sizes in architectures]
        if seen:
            note += (f", and {' and '.join(seen)} {'test' if len(seen) > 1 else 'tests'} no generalization to "
                     f"{'networks' if len(seen) > 1 else 'a network'} it saw in meta-training")
        notes.append(note + ".")
    return "".join(note + "\n\n" for note in notes)


def summary_rows(outcomes: dict[str, tuple[Experiment, Comparison]]) -> list[dict[str, Any]]:
    """Per experiment: the learned optimizer's figures next to the best tuned baseline's."""
    rows = []
    for key, (experiment, comparison) in outcomes.items():
        summaries = comparison.summaries
        best = min((name for name in summaries if name != LEARNED), key=lambda name: summaries[name]["mean"])
        rows.append({
            "experiment": experiment.title,
            "key": key,
            "steps": experiment.steps,
            "lstm_mean": summaries[LEARNED]["mean"],
            "lstm_mean_ci": summaries[LEARNED]["mean_ci"],
            "best_baseline": best,
            "best_baseline_lr": comparison.learning_rates[best],
            "best_baseline_mean": summaries[best]["mean"],
            "best_baseline_mean_ci": summaries[best]["mean_ci"],
            "ratio": comparison.ratios()["mean_vs_best_baseline"],
            "lstm_test_accuracy": summaries[LEARNED].get("test_accuracy"),
            "best_accuracy_baseline": max((n for n in summaries if n != LEARNED),
                                          key=lambda n: summaries[n].get("test_accuracy", 0.0)),
            "best_baseline_test_accuracy": max(summaries[n].get("test_accuracy", 0.0)
                                               for n in summaries if n != LEARNED),
        })
    return rows


def write_summary(
    run_dir: pathlib.Path,
    outcomes: dict[str, tuple[Experiment, Comparison]],
    evaluation: EvaluationConfig,
    command: str,
    learned_source: str,
    note: str = "",
) -> str:
    """results.md, results.json and experiments.png in `run_dir`; return the markdown table.
    `note`, if any, stands before the table."""
    rows = summary_rows(outcomes)
    lines = ["| experiment | LSTM mean final loss | best tuned baseline | its mean final loss | "
             "LSTM / best | LSTM test accuracy | best baseline test accuracy |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['experiment']} | {row['lstm_mean']:.3f} [{row['lstm_mean_ci'][0]:.3f}, "
            f"{row['lstm_mean_ci'][1]:.3f}] | {row['best_baseline']} (lr {row['best_baseline_lr']:.3g}) | "
            f"{row['best_baseline_mean']:.3f} [{row['best_baseline_mean_ci'][0]:.3f}, "
            f"{row['best_baseline_mean_ci'][1]:.3f}] | {row['ratio']:.2f} | {row['lstm_test_accuracy']:.4f} | "
            f"{row['best_baseline_test_accuracy']:.4f} ({row['best_accuracy_baseline']}) |"
        )
    table = "\n".join(lines)
    with atomic_path(run_dir / "experiments.png") as tmp:
        plot_panels({experiment.title: comparison.curves for experiment, comparison in outcomes.values()}, tmp)
    info = machine()
    write_text_atomic(run_dir / "results.json", json.dumps(json_safe({
        "command": command, "code_version": code_version(), "machine": info,
        "learned_optimizer": learned_source, "evaluation": to_dict(evaluation), "experiments": rows,
    }), indent=1, allow_nan=False) + "\n")
    markdown = (
        "# MNIST experiments of Andrychowicz et al. (2016), section 3.2\n\n"
        f"Learned optimizer: {learned_source}. Mean final training loss over "
        f"{evaluation.test_problems} held-out optimizee runs per experiment (95% bootstrap intervals), "
        "baselines tuned per experiment on validation runs; test accuracy of the optimizee after its "
        "last step. Per-experiment tables and plots are in the subdirectories a to e.\n\n"
        f"{note}{table}\n\n![loss curves](experiments.png)\n\n"
        f"Command: `{command}`  \nCode: {code_version()}  \nMachine: {describe_machine(info)}\n"
    )
    write_text_atomic(run_dir / "results.md", markdown)
    return table
