"""What a whole training iteration costs with `general` against `torch.optim.Adam(foreach=True)`.

    python benchmarks/iteration_cost.py [--threads N] [--device cuda] [--optimizer NAME]

On an MLP 784-1024-256-10 (1,068,810 parameters, ReLU) trained on batches of 128 random
inputs: the median time of a whole iteration (zero_grad, forward, backward, step) and of the
step alone, for Adam (foreach) and the learned optimizer, measured side by side in one process,
alternating so that both see the same machine state.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.provenance import describe_machine, machine

SIZES = (784, 1024, 256, 10)
BATCH = 128


def model(device: torch.device) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(SIZES[:-1], SIZES[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """One model and optimizer, timed per iteration and per step."""

    def __init__(self, make_optimizer, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = model(device)
        self.optimizer = make_optimizer(self.net.parameters())
        generator = torch.Generator(device=device).manual_seed(seed)
        self.inputs = torch.randn(BATCH, SIZES[0], device=device, generator=generator)
        self.labels = torch.randint(0, SIZES[-1], (BATCH,), device=device, generator=generator)
        self.device = device
        self.iterations: list[float] = []
        self.steps: list[float] = []

    def iterate(self) -> None:
        synchronize(self.device)
        began = time.perf_counter()
        self.optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.net(self.inputs), self.labels)
        loss.backward()
        synchronize(self.device)
        stepping = time.perf_counter()
        self.optimizer.step()
        synchronize(self.device)
        ended = time.perf_counter()
        self.iterations.append(ended - began)
        self.steps.append(ended - stepping)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--optimizer", default="general", help="shipped name or learned-optimizer file")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.optimizer.endswith(".pt"):
        make = lambda params: LearnedOptimizer.from_file(args.optimizer, params, threads=0)
    else:
        make = lambda params: LearnedOptimizer.from_pretrained(args.optimizer, params, threads=0)
    trainers = {"Adam (foreach)": Trainer(lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True), device, 0),
                args.optimizer: Trainer(make, device, 0)}
    for _ in range(3):  # warm-up: lazy state, allocator
        for trainer in trainers.values():
            trainer.iterate()
    for trainer in trainers.values():
        trainer.iterations.clear()
        trainer.steps.clear()
    for _ in range(args.repeats):
        for trainer in trainers.values():
            trainer.iterate()
    params = sum(p.numel() for p in trainers["Adam (foreach)"].net.parameters())
    print(f"{describe_machine(machine())}, torch {torch.__version__}, {args.device}, {args.threads} thread(s)")
    print(f"MLP {'-'.join(map(str, SIZES))} ({params:,} parameters), batch {BATCH}, median of {args.repeats}")
    adam = trainers["Adam (foreach)"]
    base_iteration, base_step = statistics.median(adam.iterations), statistics.median(adam.steps)
    print("| optimizer | iteration (ms) | x Adam | step (ms) | x Adam |")
    print("|---|---|---|---|---|")
    for name, trainer in trainers.items():
        iteration, step = statistics.median(trainer.iterations), statistics.median(trainer.steps)
        print(f"| {name} | {iteration * 1e3:.1f} | {iteration / base_iteration:.2f} | {step * 1e3:.1f} | "
              f"{step / base_step:.2f} |")


if __name__ == "__main__":
    main()
