"""The example scripts: their measuring functions, and a short real run."""

import importlib.util
import pathlib
import sys

import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _column(line, label):
    return float(line.split(label)[1].split(",")[0])


def test_step_sizes_tells_a_gradient_following_step_from_a_sign_like_one():
    step_sizes = _load("step_sizes")
    grads = torch.cat([torch.full((100,), 10.0**k) for k in range(-5, -1)])
    grads[::2] *= -1
    proportional = step_sizes.describe_steps(grads, -0.5 * grads)
    sign_like = step_sizes.describe_steps(grads, -0.01 * grads.sign())
    assert len(proportional) == len(sign_like) == 4  # one line per decade with data
    assert [_column(line, "median |step|/|g|") for line in proportional] == [0.5] * 4
    assert [_column(line, "median |step|") for line in sign_like] == [0.01] * 4
    assert all(_column(line, "downhill") == 1.0 for line in proportional + sign_like)
    uphill = step_sizes.describe_steps(grads, grads)
    assert all(_column(line, "downhill") == 0.0 for line in uphill)


def test_step_sizes_runs_on_real_mnist(mnist_dir, monkeypatch, capsys):
    step_sizes = _load("step_sizes")
    monkeypatch.setattr(sys, "argv", ["step_sizes.py", "--data-dir", str(mnist_dir), "--instances", "1",
                                      "--steps", "0", "2"])
    step_sizes.main()
    out = capsys.readouterr().out
    assert out.count("step ") == 2 and "median |step|/|g|" in out
