"""Cost of gathering MNIST minibatches: advanced indexing against index_select.

    python benchmarks/gather.py --data-dir ../shared/data/mnist [--threads 2]

Every MLP step gathers [instances, 128] rows of 784 pixels. `images[batch]` (advanced indexing)
and `images.index_select(0, batch.view(-1))` return the same tensor; this prints the best of
`--repeats` timings of each, in milliseconds, for the instance counts that tuning (16) and the
test runs (100) use.
"""

from __future__ import annotations

import argparse
import time

import torch

from optimizer3.provenance import machine
from optimizer3.tasks.mnist import load_mnist


def best_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return 1e3 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_mnist(args.data_dir).train_images[50000:]
    print(machine())
    generator = torch.Generator().manual_seed(0)
    for instances in (16, 100):
        batch = torch.randint(0, len(images), (instances, 128), generator=generator)
        assert torch.equal(images[batch], images.index_select(0, batch.view(-1)).view(instances, 128, -1))
        indexing = best_ms(lambda: images[batch], args.repeats)
        selecting = best_ms(lambda: images.index_select(0, batch.view(-1)).view(instances, 128, -1), args.repeats)
        print(f"{instances:4d} instances x 128 images: images[batch] {indexing:.2f} ms, "
              f"index_select {selecting:.2f} ms ({indexing / selecting:.1f}x)")


if __name__ == "__main__":
    main()
