"""Devices: names checked before any work, and a GPU run that matches the CPU's.

The CUDA tests run only where a GPU is present; on a CPU-only machine the refusal of
`--device cuda` is tested instead.
"""

import math

import pytest
import torch

from optimizer3.cli import main
from optimizer3.errors import UsageError
from optimizer3.evaluation.compare import compare
from optimizer3.evaluation.config import EvaluationConfig, LearningRateGrid
from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.trainer import meta_train
from optimizer3.runtime import RuntimeConfig, check_device_name, device_from_name
from optimizer3.tasks import TaskConfig, make_task_family
from optimizer3.tasks.mlp import MLPFamily
from optimizer3.tasks.images import on_device
from optimizer3.tasks.quadratic import QuadraticFamily
from optimizer3.evaluation.runs import run_baseline, run_learned
from test_mlp import _fake_mnist

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")
TINY = MetaTrainConfig(
    task=TaskConfig(dim=5), optimizer=LSTMOptimizerConfig(momentum_inputs=(0.9,)), horizon=20, unroll=5,
    problems=16, trajectories=4, validation_problems=32, validate_every=2,
)


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "", "gpu", "meta"])
def test_a_name_that_is_no_supported_device_is_refused(name):
    with pytest.raises(UsageError, match="use cpu, cuda or cuda:N"):
        check_device_name(name)
    with pytest.raises(UsageError, match="Invalid device"):
        RuntimeConfig(device=name)


def test_cpu_is_the_default_and_the_tasks_live_there():
    assert RuntimeConfig().device == "cpu"
    assert device_from_name("cpu") == torch.device("cpu")
    task = make_task_family(TaskConfig(dim=3), device="cpu").sample(2, torch.Generator())
    assert task.weights.device.type == "cpu"


def test_a_run_may_be_resumed_on_another_device_but_with_no_other_change(tmp_path, capsys):
    run_dir = tmp_path / "run"
    tiny = ["--dim", "3", "--horizon", "4", "--unroll", "2", "--problems", "2", "--trajectories", "1",
            "--validation-problems", "2", "--validate-every", "1", "--quiet", "--threads", "1"]
    assert main(["meta-train", "--run-dir", str(run_dir), *tiny]) == 0
    assert main(["meta-train", "--resume", str(run_dir), "--device", "cpu"]) == 0
    assert "is complete" in capsys.readouterr().out
    assert main(["meta-train", "--resume", str(run_dir), "--device", "cpu", "--horizon", "8"]) == 2
    assert "drop --horizon" in capsys.readouterr().err


@pytest.mark.skipif(CUDA, reason="this machine has a CUDA device")
@pytest.mark.parametrize("command", [["meta-train"], ["reproduce", "quadratic"], ["reproduce", "mnist"],
                                     ["evaluate", "--pretrained", "quadratic"]])
def test_cuda_on_a_machine_without_it_stops_before_anything_is_written(tmp_path, capsys, command, mnist_dir):
    run_dir = tmp_path / "run"
    data = ["--data-dir", str(mnist_dir)] if "mnist" in command else []
    assert main([*command, *data, "--device", "cuda", "--run-dir", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "'cuda'" in error and "no CUDA device" in error and "--device cpu" in error
    assert not run_dir.exists()


@needs_cuda
def test_a_cuda_index_beyond_the_machines_is_refused():
    count = torch.cuda.device_count()
    with pytest.raises(UsageError, match=f"has {count} CUDA device"):
        device_from_name(f"cuda:{count}")


@needs_cuda
def test_tasks_on_cuda_draw_the_same_problems_and_minibatches():
    data = _fake_mnist()
    cpu_family = MLPFamily(data, hidden=(5,), batch_size=8, heldout=100)
    gpu_family = MLPFamily(on_device(data, torch.device("cuda")), hidden=(5,), batch_size=8, heldout=100)
    assert on_device(data, torch.device("cuda")) is on_device(data, torch.device("cuda"))  # copied once
    cpu_task, gpu_task = cpu_family.sample(3, torch.Generator()), gpu_family.sample(3, torch.Generator())
    g_cpu, g_gpu = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    cpu_params, gpu_params = cpu_task.init(g_cpu), gpu_task.init(g_gpu)
    assert gpu_params.is_cuda and torch.equal(gpu_params.cpu(), cpu_params)
    cpu_batch, gpu_batch = cpu_task.sample_batch(g_cpu), gpu_task.sample_batch(g_gpu)
    assert gpu_batch.is_cuda and torch.equal(gpu_batch.cpu(), cpu_batch)
    torch.testing.assert_close(gpu_task.loss(gpu_params, gpu_batch).cpu(), cpu_task.loss(cpu_params, cpu_batch))
    quadratics = QuadraticFamily(dim=4, device="cuda").sample(2, torch.Generator().manual_seed(1))
    assert torch.equal(quadratics.weights.cpu(), QuadraticFamily(dim=4).sample(2, torch.Generator().manual_seed(1)).weights)


@needs_cuda
def test_meta_training_on_cuda_follows_the_cpu_run_and_saves_cpu_tensors(tmp_path):
    cpu = meta_train(TINY, progress=False)
    gpu = meta_train(TINY, RuntimeConfig(device="cuda"), tmp_path, progress=False)
    # Same start, same problems: the first validation and the first trajectory's meta-loss agree
    # to rounding (later ones drift apart as rounding differences feed back through the meta-steps).
    assert gpu.history[0]["validation_loss"] == pytest.approx(cpu.history[0]["validation_loss"], rel=1e-4)
    assert gpu.history[1]["meta_loss"] == pytest.approx(cpu.history[1]["meta_loss"], rel=1e-2)
    for key in cpu.meta_params:
        assert gpu.meta_params[key].device.type == gpu.best_meta_params[key].device.type == "cpu"
        assert torch.isfinite(gpu.meta_params[key]).all()
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")  # torch.load(weights_only=True), on the CPU
    tensors = [*checkpoint["meta_params"].values(), *checkpoint["best_meta_params"].values(),
               *(v for state in checkpoint["meta_opt_state"]["state"].values() for v in state.values())]
    assert all(t.device.type == "cpu" for t in tensors)


@needs_cuda
def test_optimizer_runs_on_cuda_match_the_cpu_ones_and_a_comparison_runs_there():
    config = LSTMOptimizerConfig(preprocessing="log_sign")
    meta_params = init_meta_params(config, torch.Generator().manual_seed(0))
    data = _fake_mnist()
    families = {device: MLPFamily(on_device(data, torch.device(device)), hidden=(6,), batch_size=16, heldout=100)
                for device in ("cpu", "cuda")}
    tasks = {device: family.sample(4, torch.Generator()) for device, family in families.items()}
    for run in (lambda task: run_baseline("adam", 0.01, task, 15, seed=3),
                lambda task: run_learned((meta_params, config), task, 15, seed=3)):
        cpu, gpu = run(tasks["cpu"]), run(tasks["cuda"])
        assert gpu.params.is_cuda and gpu.losses.device.type == "cpu"
        torch.testing.assert_close(gpu.losses, cpu.losses, rtol=1e-3, atol=1e-4)
    evaluation = EvaluationConfig(baselines=("sgd", "adam"), test_problems=8, tuning_problems=4, bootstrap=20,
                                  grid=LearningRateGrid(1e-2, 1.0, per_decade=3))
    comparison = compare((meta_params, config), families["cuda"], evaluation, (10,), tuning_seed=1,
                         runtime=RuntimeConfig(device="cuda"))[10]
    for summary in comparison.summaries.values():
        assert math.isfinite(summary["mean"]) and 0 <= summary["test_accuracy"] <= 1
