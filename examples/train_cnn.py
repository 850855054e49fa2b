"""Train a small convolutional network on MNIST with a pretrained learned optimizer, and with Adam.

    python examples/train_cnn.py --data-dir ../shared/data/mnist [--out runs/examples/cnn_losses.png]

The learned optimizer (`mnist` by default) was meta-trained on different models (MLPs with one
hidden layer of sigmoid or ReLU units, for 100 steps); this network has convolutions and is
trained for longer, so this is a test of how it generalizes. Adam's learning rate is tuned first, on runs with seeds
of their own, by the criterion the project uses everywhere: the lowest mean final training
loss. Then both optimizers train the network from the same initial weights on the same
minibatches, for several seeds. Writes the figure (by default into runs/examples/, outside the
tracked files) and prints the final figures.
"""

from __future__ import annotations

import argparse
import pathlib
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from optimizer3 import LearnedOptimizer  # noqa: E402
from optimizer3.tasks.images import load_mnist  # noqa: E402

ADAM_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


class SmallCNN(torch.nn.Module):
    """Two 5x5 convolutions with ReLU and max-pooling, then a linear classifier: 7,434 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(8, 16, 5)
        self.out = torch.nn.Linear(16 * 5 * 5, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(images.view(-1, 1, 28, 28))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.out(x.flatten(1))


def train(make_optimizer, data, steps: int, batch_size: int, seed: int) -> tuple[list[float], float]:
    """Train a fresh SmallCNN (initialized from `seed`); training losses and test accuracy."""
    torch.manual_seed(seed)
    model = SmallCNN()
    optimizer = make_optimizer(model.parameters())
    batches = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        index = torch.randint(len(data.train_labels), (batch_size,), generator=batches)
        loss = F.cross_entropy(model(data.train_images[index]), data.train_labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        accuracy = (model(data.test_images).argmax(1) == data.test_labels).float().mean().item()
    return losses, accuracy


def final_loss(losses: list[float], window: int = 10) -> float:
    """Mean training loss over the last `window` steps (single minibatch losses are noisy), or
    over every step of a shorter run."""
    last = losses[-window:]
    return sum(last) / len(last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="directory with the MNIST IDX files")
    parser.add_argument("--optimizer", default="mnist", help="pretrained name, or a learned-optimizer file")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=5, help="runs per optimizer in the comparison")
    parser.add_argument("--out", default="runs/examples/cnn_losses.png", help="where to write the figure")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    began = time.perf_counter()
    data = load_mnist(args.data_dir)

    def learned(params):
        if args.optimizer.endswith(".pt"):
            return LearnedOptimizer.from_file(args.optimizer, params)
        return LearnedOptimizer.from_pretrained(args.optimizer, params)

    # Tune Adam on seeds 1000 and 1001; compare on seeds 0 .. seeds - 1.
    scores = {}
    for lr in ADAM_GRID:
        runs = [train(lambda p: torch.optim.Adam(p, lr=lr), data, args.steps, args.batch_size, 1000 + s)
                for s in range(2)]
        scores[lr] = sum(final_loss(losses) for losses, _ in runs) / len(runs)
    best_lr = min(scores, key=scores.get)
    print("Adam tuning (mean final training loss):",
          ", ".join(f"{lr:g}: {score:.3f}" for lr, score in scores.items()), f"-> {best_lr:g}")

    results = {}
    for name, make in ((f"learned ({args.optimizer})", learned),
                       (f"Adam (lr {best_lr:g})", lambda p: torch.optim.Adam(p, lr=best_lr))):
        results[name] = [train(make, data, args.steps, args.batch_size, seed) for seed in range(args.seeds)]

    figure, axis = plt.subplots(figsize=(6, 4))
    for name, runs in results.items():
        curves = torch.tensor([losses for losses, _ in runs])
        mean = curves.mean(0)
        axis.plot(range(1, args.steps + 1), mean, label=name)
        axis.fill_between(range(1, args.steps + 1), curves.min(0).values, curves.max(0).values, alpha=0.2)
        finals = torch.tensor([final_loss(losses) for losses, _ in runs])
        accuracy = torch.tensor([acc for _, acc in runs])
        print(f"{name}: final training loss {finals.mean():.3f} (seeds {finals.min():.3f} to "
              f"{finals.max():.3f}), test accuracy {accuracy.mean():.4f}")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (minibatch)")
    axis.set_title(f"SmallCNN on MNIST, mean of {args.seeds} seeds (band: min to max)")
    axis.legend()
    figure.tight_layout()
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=120)
    print(f"plot: {args.out}; {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
