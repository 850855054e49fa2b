"""What one `LearnedOptimizer.step()` costs, against `torch.optim.Adam(foreach=True)`.

    python benchmarks/step_cost.py [--threads N] [--device cuda] [--compile] [--sweep-blocks]

For the MNIST MLP of the paper (15,910 parameters) and an MLP of about one million parameters:
median time per `step()` of each optimizer, optimizer-state bytes per parameter, and the
learned step's arithmetic rate against the bound that matters for it: this machine's
float32 matrix-multiply throughput on the LSTM's own matrix products (each layer's transposed
weight times the feature-major inputs of a block of `chunk_rows(device)` coordinates, as
`learned.lstm_fast` multiplies them), measured here. A large square matrix product is timed too,
for scale.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.learned.features import input_size
from optimizer3.optim import learned as learned_module
from optimizer3.optim.learned import LearnedOptimizer, chunk_rows
from optimizer3.provenance import describe_machine, machine

MODELS = {
    "MNIST MLP 784-20-10": (784, 20, 10),
    "MLP 784-1024-256-10": (784, 1024, 256, 10),
}


def mlp(sizes: tuple[int, ...]) -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.Sigmoid()]
    return torch.nn.Sequential(*layers[:-1])


def flops_per_coordinate(config: LSTMOptimizerConfig) -> int:
    """Multiply-adds x 2 of the LSTM's matrix products for one coordinate's step."""
    flops, fan_in = 0, input_size(config.preprocessing)
    for _ in range(config.layers):
        flops += 2 * (fan_in + config.hidden_size) * 4 * config.hidden_size
        fan_in = config.hidden_size
    return flops + 2 * config.hidden_size


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(call, device: torch.device, repeats: int) -> float:
    call()  # warm-up: allocations, lazy state
    times = []
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def gemm_bound(config: LSTMOptimizerConfig, device: torch.device, repeats: int) -> float:
    """FLOP/s of float32 matrix products with the LSTM step's shapes and orientation on blocks
    of `chunk_rows` coordinates: [outputs, k] x [k, rows], the state feature-major."""
    rows = chunk_rows(device)
    shapes, fan_in = [], input_size(config.preprocessing)
    for _ in range(config.layers):
        shapes.append((fan_in + config.hidden_size, 4 * config.hidden_size))
        fan_in = config.hidden_size
    shapes.append((config.hidden_size, 1))
    # Into preallocated outputs: the bound is the arithmetic, not the allocator.
    operands = [(torch.randn(n, k, device=device), torch.randn(k, rows, device=device),
                 torch.empty(n, rows, device=device)) for k, n in shapes]
    flops = sum(2 * rows * k * n for k, n in shapes)
    seconds = median_seconds(lambda: [torch.mm(a, b, out=c) for a, b, c in operands], device, repeats * 20)
    return flops / seconds


def square_gemm(device: torch.device, repeats: int) -> float:
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    return 2 * 2048**3 / median_seconds(lambda: a @ b, device, repeats)


def elementwise_ns(device: torch.device, repeats: int) -> dict[str, float]:
    """Nanoseconds per element of the step's element-wise operations on a block of gates."""
    gates = torch.randn(chunk_rows(device), 80, device=device)
    calls = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "mul": lambda x: x * x}
    return {name: median_seconds(lambda: call(gates), device, repeats * 5) / gates.numel() * 1e9
            for name, call in calls.items()}


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values()
               for v in s.values() if isinstance(v, torch.Tensor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compile", action="store_true",
                        help="also time LearnedOptimizer(compile=True), after its compile")
    parser.add_argument("--sweep-blocks", action="store_true",
                        help="also time the one-million-parameter step for several block sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = LSTMOptimizerConfig(preprocessing="log_sign")
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    bound = gemm_bound(config, device, args.repeats)
    print(f"machine: {describe_machine(machine())}; device {device}")
    print(f"float32 matrix products, LSTM shapes ({chunk_rows(device)} rows): {bound / 1e9:.1f} GFLOP/s; "
          f"square 2048: {square_gemm(device, args.repeats) / 1e9:.1f} GFLOP/s")
    print(f"learned optimizer: {flops_per_coordinate(config):,} matrix FLOPs per parameter per step")
    print(f"element-wise on {chunk_rows(device)} x 80 floats, ns per element: " + ", ".join(
        f"{name} {ns:.2f}" for name, ns in elementwise_ns(device, args.repeats).items()))
    print("| model | parameters | LearnedOptimizer step | Adam(foreach) step | ratio | learned GFLOP/s "
          "| fraction of bound | state bytes/param (learned, Adam) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, sizes in MODELS.items():
        model = mlp(sizes).to(device)
        params = list(model.parameters())
        count = sum(p.numel() for p in params)
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
        adam_s = median_seconds(adam.step, device, args.repeats)
        for compile in (False, True) if args.compile else (False,):
            learned = LearnedOptimizer(params, meta, config, compile=compile, threads=0)  # --threads, uncapped
            learned.step()  # the first steps compile
            learned_s = median_seconds(learned.step, device, args.repeats)
            rate = flops_per_coordinate(config) * count / learned_s
            print(f"| {name}{' (compiled)' if compile else ''} | {count:,} | {learned_s * 1e3:.2f} ms | "
                  f"{adam_s * 1e3:.3f} ms | {learned_s / adam_s:.0f}x | {rate / 1e9:.1f} | {rate / bound:.2f} | "
                  f"{state_bytes(learned) / count:.0f}, {state_bytes(adam) / count:.0f} |")
    if args.sweep_blocks:
        sweep_blocks(config, meta, device, args.repeats)


def sweep_blocks(config: LSTMOptimizerConfig, meta, device: torch.device, repeats: int) -> None:
    """Time per step of the ~1M-parameter model for several block sizes (`chunk_rows`)."""
    model = mlp(MODELS["MLP 784-1024-256-10"]).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    default = learned_module.chunk_rows
    for rows in (1024, 2048, 4096, 8192, 16384, 32768, 65536, 1 << 18, 1 << 20, 1 << 30):
        learned_module.chunk_rows = lambda _device, rows=rows: rows
        optimizer = LearnedOptimizer(model.parameters(), meta, config, threads=0)
        seconds = median_seconds(optimizer.step, device, max(3, repeats // 4))
        label = "whole parameter" if rows == 1 << 30 else f"{rows} rows"
        print(f"block of {label}: {seconds * 1e3:.0f} ms per step")
    learned_module.chunk_rows = default


if __name__ == "__main__":
    main()
