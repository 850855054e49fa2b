"""Pretrained learned optimizers shipped in the package, each with a card saying what made it.

Every optimizer is two files in this directory: `NAME.pt`, a learned-optimizer file
(`learned.files`), and `NAME.json`, its card: what it is for, where it is known to fail, the
command, seed, code version, machine and time of its meta-training, and its evaluation against
tuned baselines. `optimizer3 export` writes both from a meta-training run and an evaluation of
it; `optimizer3 list-pretrained` prints them.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from optimizer3.errors import CheckpointError, UsageError

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parent
# The order in which `list-pretrained` presents the shipped optimizers: the default first.
ORDER = ("mnist", "general", "mnist-paper", "quadratic")
GUIDE = """\
Which one to use:
  mnist        the default for small MLPs of sigmoid, tanh, ReLU or GELU units, logistic
               regression, a small transformer language model; 100 to 200 steps, untuned (lr 1).
               Not for CNNs (1.5x tuned Muon's loss) or quadratics (blows up).
  general      models unlike any above (CNNs, other data), and runs of up to 1,000 steps: no failed
               run on any network of the benchmark, within 1.25x of the best tuned baseline on each
               held-out one at 100 steps (1.10x on their geometric mean), 1.38x on 8x8 sigmoid MLPs
               and 1.35x on an 8x8 GELU MLP at 1,000 steps; behind on quadratics (2x to 13.5x Adam).
  mnist-paper  the paper's MNIST experiments (sigmoid MLPs): the best there, and failing runs
               on most other tasks.
  quadratic    the paper's random 10-dimensional quadratics, and nothing else.
Only general was meta-trained on runs longer than 100 steps (up to 1,000); none on models of more
than 16,000 parameters. Each one's "benchmark" lines come from `optimizer3 benchmark` (README:
where they break down)."""


def available(directory: pathlib.Path | None = None) -> list[str]:
    """Names of the pretrained optimizers in `directory` (default: the package's), the
    shipped ones in their recommended order, then any others by name."""
    names = sorted(card.stem for card in (directory or PRETRAINED_DIR).glob("*.json"))
    return [name for name in ORDER if name in names] + [name for name in names if name not in ORDER]


def pretrained_path(name: str, directory: pathlib.Path | None = None) -> pathlib.Path:
    """The learned-optimizer file of the pretrained optimizer `name`, checked against its card."""
    names = available(directory)
    if name not in names:
        raise UsageError(f"No pretrained optimizer named {name!r}; available: {', '.join(names) or 'none'}")
    card = load_card(name, directory)
    path = (directory or PRETRAINED_DIR) / card["file"]
    if not path.is_file() or sha256(path) != card["sha256"]:
        raise CheckpointError(f"Pretrained optimizer {name}: {path} is missing or does not match its "
                              "card's SHA-256; reinstall optimizer3")
    return path


def resolve(source: str) -> pathlib.Path:
    """The file of `source`: a shipped pretrained name, or else a path to a learned-optimizer
    file or a training checkpoint."""
    if source in available():
        return pretrained_path(source)
    path = pathlib.Path(source)
    if not path.is_file():
        raise UsageError(
            f"No learned optimizer {source!r}: it is neither a file nor a shipped pretrained name "
            f"({', '.join(available())}); give a checkpoint, an exported file or one of those names")
    return path


def load_card(name: str, directory: pathlib.Path | None = None) -> dict[str, Any]:
    """The card of the pretrained optimizer `name`, as a dict."""
    return json.loads(((directory or PRETRAINED_DIR) / f"{name}.json").read_text())


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _architecture(card: dict[str, Any]) -> str:
    optimizer = card["optimizer"]
    if card.get("architecture") == "mlp":
        return (f"per-parameter MLP of hidden layers {' x '.join(map(str, optimizer['hidden_sizes']))} over "
                f"normalized features (Adam ratios at momenta {' '.join(map(str, optimizer['momentum_decays']))}, "
                "factored second moment, normalized gradient and parameter)")
    text = (f"{optimizer['layers']} x {optimizer['hidden_size']} LSTM, preprocessing "
            f"{optimizer['preprocessing']}, {optimizer['update_form']} update")
    if optimizer["momentum_inputs"]:
        text += f", gradient averages {' '.join(map(str, optimizer['momentum_inputs']))}"
    return text


def _stages(card: dict[str, Any]) -> list[str]:
    """The commands of the meta-training stages that made the optimizer, first to last."""
    recipe = card.get("recipe") or [{"command": card["meta_training"]["command"]}]
    head = "  meta-trained:" if len(recipe) == 1 else f"  meta-trained in {len(recipe)} stages, each from the one before:"
    return [head, *(f"    {stage['command']}" for stage in recipe)]


def describe(card: dict[str, Any]) -> str:
    """A few lines about one pretrained optimizer, for `optimizer3 list-pretrained`."""
    training, evaluation = card["meta_training"], card.get("evaluation")
    lines = [f"{card['name']}: {card['purpose']}",
             *(f"  known to fail: {failure}" for failure in card.get("known_failures", [])),
             f"  architecture: {_architecture(card)}",
             f"  how it was made: {card['description']}",
             *_stages(card),
             f"    last stage: seed {training['seed']}, {training['seconds']:.0f} s on {training['machine']['processor']}, "
             f"code {training['code_version']}, {training['date']}"]
    if evaluation is None:  # benchmarked only (the benchmark is its evaluation)
        return "\n".join([*lines, *_benchmark(card)])
    lines.append(f"  evaluated: {evaluation['command']}")
    final = evaluation["final_loss"]
    best = min((n for n in final if n != "lstm"), key=lambda n: final[n]["mean"])
    line = (f"    {evaluation['test_problems']} test problems, {evaluation['steps']} steps: mean final loss "
            f"{final['lstm']['mean']:.3g} vs {final[best]['mean']:.3g} for tuned {best} "
            f"({evaluation['ratios']['mean_vs_best_baseline']:.2f}x)")
    if "test_accuracy" in final["lstm"]:
        line += f"; test accuracy {final['lstm']['test_accuracy']:.3f} vs {final[best]['test_accuracy']:.3f}"
    return "\n".join([*lines, line, *_benchmark(card)])


def _benchmark(card: dict[str, Any]) -> list[str]:
    """The card's benchmark summary (`optimizer3 benchmark`), if it has one."""
    if "benchmark" not in card:
        return []
    bench = card["benchmark"]
    lines = [f"  benchmark: {bench['command']} ({bench['date']}, {bench['machine']})"]
    for split, entry in bench["splits"].items():
        ratio = entry["geometric_mean_ratio_without_failures"]
        lines.append(f"    {split} tasks: fails on {', '.join(entry['failed_on']) or 'none'}; elsewhere its mean final loss "
                     f"is {'–' if ratio is None else f'{ratio:.2f}'} times the best tuned baseline's (geometric mean over "
                     f"{entry['tasks_without_failures']} tasks), more than 1.25 times on "
                     f"{', '.join(entry['behind_by_25_percent']) or 'none'}")
    return lines


__all__ = ["GUIDE", "PRETRAINED_DIR", "available", "describe", "load_card", "pretrained_path", "resolve"]
