"""How far bfloat16 products move meta-training's numbers from float32's, on MNIST.

    python benchmarks/matmul_dtype.py --data-dir ../shared/data/mnist [--pretrained mnist-mix]

With a shipped optimizer's meta-parameters and meta-training settings: the meta-gradient of one
truncation (`--unroll` steps of `--instances` instances) under each `--matmul-dtype`, and their
cosine; then the optimizer run on `--validation-problems` held-out problems for the horizon
(validation is float32 in meta-training; here each dtype's step runs it, to see the
optimizer's own sensitivity).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402

from optimizer3.learned import lstm  # noqa: E402
from optimizer3.meta.checkpoint import load_learned_optimizer  # noqa: E402
from optimizer3.meta.trainer import loss_weights, meta_gradient  # noqa: E402
from optimizer3.meta.unroll import start, unroll  # noqa: E402
from optimizer3.pretrained import resolve  # noqa: E402
from optimizer3.provenance import machine  # noqa: E402
from optimizer3.tasks import make_task_family  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--pretrained", default="mnist-mix")
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--unroll", type=int, default=100)
    parser.add_argument("--validation-problems", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    meta_params, config = load_learned_optimizer(resolve(args.pretrained))
    family = make_task_family(config.task, "train", args.data_dir)
    heldout = make_task_family(config.task, "heldout", args.data_dir)
    gradients, finals = {}, {}
    for dtype in lstm.MATMUL_DTYPES:
        run = dataclasses.replace(config, problems=args.instances, unroll=args.unroll, matmul_dtype=dtype,
                                  recompute_every=0)
        params = {k: v.clone().requires_grad_() for k, v in meta_params.items()}
        generator = torch.Generator().manual_seed(5)
        task = family.sample(args.instances, generator)
        carry, _ = start(task, config.optimizer, generator)
        weights = loss_weights(config.loss_weights, config.horizon)[: args.unroll]
        loss, _ = meta_gradient(params, run, task, carry, generator, weights)
        gradients[dtype] = torch.cat([v.grad.flatten() for v in params.values()])
        generator = torch.Generator().manual_seed(1)
        problems = heldout.sample(args.validation_problems, generator)
        carry, _ = start(problems, config.optimizer, generator)
        with torch.no_grad():
            _, _, losses = unroll(meta_params, config.optimizer, problems, carry, config.horizon, generator,
                                  matmul_dtype=dtype)
        finals[dtype] = losses[-1]
        print(f"{dtype}: meta-loss {loss:.5f}, meta-gradient norm {gradients[dtype].norm():.4f}, "
              f"mean final loss on {args.validation_problems} held-out problems {finals[dtype].mean():.4f}")
    cosine = torch.nn.functional.cosine_similarity(gradients["float32"], gradients["bfloat16"], dim=0)
    change = ((finals["bfloat16"] - finals["float32"]).abs() / finals["float32"]).max()
    print(f"cosine of the meta-gradients: {cosine:.4f}; largest relative change of a final loss: {change:.2%}")


if __name__ == "__main__":
    main()
