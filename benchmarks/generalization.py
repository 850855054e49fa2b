"""Where the shipped MNIST optimizers stop working: MLPs of other activations and depths.

    python benchmarks/generalization.py --data-dir ../shared/data/mnist [--pretrained mnist mnist-paper]
        [--test-problems 12] [--tuning-problems 8] [--threads 1] [--device cuda]

For each network (one hidden layer of 20 sigmoid, tanh or ReLU units; two of 20 ReLU units),
every optimizer trains the same held-out MLP instances for 100 and 200 steps, against NAG and
Adam tuned per network and horizon by the shared protocol (grid 1e-3 to 10). Prints, per
network, horizon and learned optimizer: its mean final training loss, the best tuned
baseline's, their ratio, diverged runs, and its test accuracy. A ratio far above 1 with a loss
near 2.30 (chance level for ten classes) is a failure, not a slow start. These are the figures
behind the "known to fail" lines of the shipped optimizers' cards.
"""

from __future__ import annotations

import argparse

import torch

from optimizer3 import pretrained
from optimizer3.evaluation.compare import LEARNED, compare_tasks
from optimizer3.evaluation.config import EvaluationConfig, LearningRateGrid
from optimizer3.learned.files import load_learned_optimizer
from optimizer3.provenance import describe_machine, machine
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig

NETWORKS = {
    "sigmoid 20": TaskConfig(name="mnist", hidden=(20,)),
    "tanh 20": TaskConfig(name="mnist", hidden=(20,), activation="tanh"),
    "relu 20": TaskConfig(name="mnist", hidden=(20,), activation="relu"),
    "relu 20-20": TaskConfig(name="mnist", hidden=(20, 20), activation="relu"),
}
HORIZONS = (100, 200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pretrained", nargs="+", default=["mnist", "mnist-paper"])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--test-problems", type=int, default=12)
    parser.add_argument("--tuning-problems", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    evaluation = EvaluationConfig(baselines=("nag", "adam"), test_problems=args.test_problems,
                                  tuning_problems=args.tuning_problems, bootstrap=200,
                                  grid=LearningRateGrid(lr_min=1e-3, lr_max=10.0))
    tasks = [(NETWORKS[name], HORIZONS) for name in args.networks]
    print(f"machine: {describe_machine(machine())}")
    print("| network | steps | optimizer | its mean final loss | best tuned baseline's | ratio | diverged "
          "| test accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.pretrained:
        loaded = load_learned_optimizer(pretrained.pretrained_path(name))
        results = compare_tasks((loaded.meta_params, loaded.config), tasks, evaluation, tuning_seed=1,
                                runtime=RuntimeConfig(device=args.device), data_dir=args.data_dir)
        for network, by_steps in zip(args.networks, results):
            for steps, comparison in by_steps.items():
                summaries = comparison.summaries
                best = min((n for n in summaries if n != LEARNED), key=lambda n: summaries[n]["mean"])
                learned = summaries[LEARNED]
                print(f"| {network} | {steps} | {name} | {learned['mean']:.3f} | {summaries[best]['mean']:.3f} "
                      f"({best}) | {learned['mean'] / summaries[best]['mean']:.2f} | {learned['diverged']} | "
                      f"{learned['test_accuracy']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
