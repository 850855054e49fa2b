"""Stress test: kill one meta-training run again and again, resume it, compare with a clean run.

    python benchmarks/kill_resume.py            # 20 kills with SIGKILL at random moments
    python benchmarks/kill_resume.py --kills 5 --signal INT

Runs a small quadratic meta-training once without interruption, then the same run killed at a
random moment after each (re)start and resumed with `optimizer3 meta-train --resume`, until it
completes. Reports how many kills landed, how many trajectories were redone, and whether the
final meta-parameters are bit-identical to the uninterrupted run's (same machine, one thread).
"""

from __future__ import annotations

import argparse
import pathlib
import random
import signal
import subprocess
import sys
import tempfile
import time

import torch

from optimizer3.meta.checkpoint import load_checkpoint

RUN = ["--dim", "6", "--horizon", "20", "--unroll", "5", "--problems", "32", "--trajectories", "400",
       "--validation-problems", "32", "--validate-every", "20", "--checkpoint-every", "3",
       "--threads", "1", "--quiet"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "optimizer3", "meta-train", *args]


def _trajectory(run_dir: pathlib.Path) -> int:
    """Trajectories in the run's checkpoint; 0 before the first one is written."""
    path = run_dir / "checkpoint.pt"  # replaced atomically, so never read half-written
    return load_checkpoint(path)["trajectory"] if path.exists() else 0


def run_with_kills(run_dir: pathlib.Path, kills: int, sig: signal.Signals, rng: random.Random) -> dict:
    landed, redone, worst = 0, 0, 0
    args = command("--run-dir", str(run_dir), *RUN)
    while True:
        before = _trajectory(run_dir)
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if landed < kills:
            # Let this start make progress (a checkpoint past `before`), then strike at a
            # random moment, which may fall anywhere between two checkpoints.
            while process.poll() is None and _trajectory(run_dir) <= before:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            if process.poll() is None:
                process.send_signal(sig)
                landed += 1
        process.wait()
        after = load_checkpoint(run_dir / "checkpoint.pt")
        metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
        lost = max(0, len(metrics) - after["trajectory"])  # logged but not checkpointed
        redone, worst = redone + lost, max(worst, lost)
        if after["trajectory"] == after["config"].trajectories and process.returncode == 0:
            return {"kills": landed, "trajectories_redone": redone, "worst": worst, "checkpoint": after}
        if after["trajectory"] < before:
            raise RuntimeError("a checkpoint went backwards")
        args = command("--resume", str(run_dir), "--threads", "1", "--quiet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--signal", default="KILL", choices=["KILL", "INT", "TERM"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clean = pathlib.Path(tmp) / "clean"
        subprocess.run(command("--run-dir", str(clean), *RUN), check=True, stdout=subprocess.DEVNULL)
        reference = load_checkpoint(clean / "checkpoint.pt")
        outcome = run_with_kills(pathlib.Path(tmp) / "killed", args.kills,
                                 getattr(signal, f"SIG{args.signal}"), random.Random(args.seed))
    final = outcome["checkpoint"]
    identical = all(
        torch.equal(final[key][name], reference[key][name])
        for key in ("meta_params", "best_meta_params") for name in reference[key]
    ) and final["best_validation"] == reference["best_validation"]
    print(f"kills landed: {outcome['kills']} (SIG{args.signal})")
    print(f"trajectories redone after kills: {outcome['trajectories_redone']} in all, at most "
          f"{outcome['worst']} after one kill (checkpoints every 3 trajectories)")
    print(f"final meta-parameters bit-identical to the uninterrupted run: {identical}")
    sys.exit(0 if identical else 1)


if __name__ == "__main__":
    main()
