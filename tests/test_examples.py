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
    # 100 coordinates at 3e-5, 3e-4, 3e-3 and 3e-2; 10 at 3e-6 (too few for a line); 7 zeros.
    grads = torch.cat([torch.full((100,), 3 * 10.0**k) for k in range(-5, -1)]
                      + [torch.full((10,), 3e-6), torch.zeros(7)])
    grads[::2] *= -1
    proportional = step_sizes.describe_steps(grads, -0.5 * grads)
    sign_like = step_sizes.describe_steps(grads, -0.01 * grads.sign())
    for lines in (proportional, sign_like):
        assert lines[0].strip().startswith("7 coordinates")  # the zeros
        assert [line.split(")")[0].strip() for line in lines[1:]] == [
            f"|g| in [1e{k}, 1e{k + 1}" for k in range(-5, -1)]
        assert all(" 100 coordinates" in line for line in lines[1:])
    assert [_column(line, "median |step|/|g|") for line in proportional[1:]] == [0.5] * 4
    assert [_column(line, "median |step|") for line in sign_like[1:]] == [0.01] * 4
    assert all(_column(line, "downhill") == 1.0 for line in proportional[1:] + sign_like[1:])
    uphill = step_sizes.describe_steps(grads, grads)
    assert all(_column(line, "downhill") == 0.0 for line in uphill[1:])


def test_step_sizes_runs_on_real_mnist(mnist_dir, monkeypatch, capsys):
    step_sizes = _load("step_sizes")
    monkeypatch.setattr(sys, "argv", ["step_sizes.py", "--data-dir", str(mnist_dir), "--instances", "1",
                                      "--steps", "0", "2"])
    step_sizes.main()
    out = capsys.readouterr().out
    assert out.count("step ") == 2 and "median |step|/|g|" in out
