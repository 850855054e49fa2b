"""How a learned optimizer's step depends on the gradient's size, on MNIST MLPs.

    python examples/step_sizes.py --data-dir ../shared/data/mnist [--pretrained mnist]
        [--checkpoint PATH] [--baseline nag --lr 1]

Trains held-out MLP instances (the base network of the paper's section 3.2) with the optimizer
and, at a few steps, groups the coordinates by the decade of their gradient's magnitude. For
each group it prints the median step size |Δθ|, the median ratio |Δθ| / |g|, and the fraction
of coordinates that moved against their gradient (downhill). SGD's ratio is the same in every
decade (its learning rate); NAG's step grows with the gradient but less than in proportion
(momentum keeps small, noisy gradients' steps from shrinking with them); a sign-like rule, such
as Adam's, keeps a step size that hardly depends on the gradient. Coordinates outside the
decades 1e-6 to 1e-1 (most of them with a zero gradient: MNIST's blank border pixels) are
counted in one line and left out of the table.
"""

from __future__ import annotations

import argparse

import torch

from optimizer3.optim.baselines import make_baseline
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks import TaskConfig, make_task_family

DECADES = range(-6, -1)


def describe_steps(grads: torch.Tensor, steps: torch.Tensor) -> list[str]:
    """A line counting the coordinates outside `DECADES`, then one line per decade with at
    least 50 coordinates."""
    magnitude = grads.abs()
    decade = magnitude.clamp_min(1e-30).log10().floor()
    outside = int(((decade < DECADES[0]) | (decade > DECADES[-1])).sum())
    lines = [f"  {outside} coordinates with |g| outside [1e{DECADES[0]}, 1e{DECADES[-1] + 1}) left out"]
    for low in DECADES:
        chosen = decade == low
        count = int(chosen.sum())
        if count < 50:
            continue
        step, grad = steps[chosen], grads[chosen]
        lines.append(
            f"  |g| in [1e{low}, 1e{low + 1}): {count:6d} coordinates, median |step| "
            f"{step.abs().median().item():.2e}, median |step|/|g| {(step.abs() / grad.abs()).median().item():9.3g}, "
            f"downhill {((step * grad) < 0).float().mean().item():.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: the usual search)")
    parser.add_argument("--pretrained", default="mnist", help="shipped learned optimizer (default: mnist)")
    parser.add_argument("--checkpoint", help="a checkpoint.pt or exported file instead of --pretrained")
    parser.add_argument("--baseline", help="a baseline (sgd, nag, rmsprop, adam) instead of a learned optimizer")
    parser.add_argument("--lr", type=float, default=None, help="the baseline's learning rate")
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--steps", type=int, nargs="+", default=[2, 10, 30, 60, 95])
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    if args.baseline and args.lr is None:
        parser.error("--baseline needs --lr")
    torch.set_num_threads(1)
    family = make_task_family(TaskConfig(name="mnist"), "heldout", args.data_dir)
    task = family.sample(args.instances, torch.Generator().manual_seed(args.seed))
    generator = torch.Generator().manual_seed(args.seed)
    params = task.init(generator).requires_grad_()
    if args.baseline:
        optimizer = make_baseline(args.baseline, [params], args.lr)
    elif args.checkpoint:
        optimizer = LearnedOptimizer.from_file(args.checkpoint, [params])
    else:
        optimizer = LearnedOptimizer.from_pretrained(args.pretrained, [params])
    for step in range(max(args.steps) + 1):
        loss = task.loss(params, task.sample_batch(generator))
        optimizer.zero_grad()
        loss.sum().backward()
        before = params.detach().clone()
        optimizer.step()
        if step in args.steps:
            print(f"step {step}: mean loss {loss.mean().item():.3f}")
            print("\n".join(describe_steps(params.grad.flatten(), (params.detach() - before).flatten())))


if __name__ == "__main__":
    main()
