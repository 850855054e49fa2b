"""Put a benchmark's summary on the cards of the shipped optimizers it measured.

    python benchmarks/card_benchmark.py runs/benchmark/results.json

For every learned optimizer of the benchmark that is a shipped one (by name, and by the digest
of its meta-parameters, so that a benchmark of another file of the same name is refused), its
card in src/optimizer3/pretrained/ gets a "benchmark" entry: the command, date and machine, and
per split the geometric mean and worst ratio to the best tuned baseline, the tasks where it
failed and those where it was behind by more than 25%. `optimizer3 list-pretrained` prints it.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from optimizer3 import pretrained
from optimizer3.experiments.benchmark import card_summary
from optimizer3.learned.files import load_learned_optimizer, meta_params_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path, help="results.json of `optimizer3 benchmark`")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    from optimizer3.tasks.suite import default_tasks

    if results.get("quick") or set(results["tasks"]) != set(default_tasks()):
        raise SystemExit(f"{args.results} is not the default suite (--quick, --tasks or --long): cards take its figures")
    for label in results["learned"]:
        if label not in pretrained.available():
            continue
        digest = meta_params_digest(load_learned_optimizer(pretrained.pretrained_path(label)).meta_params)
        if results["meta_params_sha256"][label] != digest:
            raise SystemExit(f"{label} in {args.results} is not the shipped {label} (another digest)")
        card_path = pretrained.PRETRAINED_DIR / f"{label}.json"
        card = json.loads(card_path.read_text())
        card["benchmark"] = card_summary(results, label)
        card_path.write_text(json.dumps(card, indent=1) + "\n")
        print(f"{card_path}: benchmark summary written")


if __name__ == "__main__":
    main()
