"""Data-parallel meta-training: processes that split the problems train as one process does."""

import json
import signal
import subprocess
import sys

import pytest
import torch
from hypothesis import given, strategies as st

from optimizer3.cli import main
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta import distributed
from optimizer3.meta.distributed import Group, current_group, rows, run_workers
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.meta.trainer import meta_train
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig, make_task_family
from conftest import run_stopping_at


@given(st.integers(1, 200), st.integers(1, 16))
def test_rows_split_the_problems_into_contiguous_nearly_equal_parts(problems, size):
    size = min(size, problems)
    parts = [rows(problems, rank, size) for rank in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == problems
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    lengths = [stop - start for start, stop in parts]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def _shards(task, size):
    return [Group(rank, size).shard(task) for rank in range(size)]


def test_a_quadratic_shard_draws_and_computes_its_rows_of_the_whole():
    task = make_task_family(TaskConfig(dim=3)).sample(5, torch.Generator().manual_seed(0))
    params = torch.randn(5, 3)
    for shard in _shards(task, 2):
        assert torch.equal(shard.init(torch.Generator()), task.init(torch.Generator())[shard.start : shard.stop])
        assert torch.allclose(shard.loss(params[shard.start : shard.stop], None),
                              task.loss(params, None)[shard.start : shard.stop])


@pytest.mark.parametrize("mix", [{"activation": "sigmoid,relu,tanh"}, {"mix_hidden": ("3,3", "5")}])
def test_an_mlp_shard_keeps_each_instance_its_draws_and_its_kind(mnist_dir, mix):
    config = TaskConfig(name="mnist", hidden=(4,), batch_size=8, **mix)
    task = make_task_family(config, "train", mnist_dir).sample(7, torch.Generator())
    params = task.init(torch.Generator().manual_seed(1))
    batch = task.sample_batch(torch.Generator().manual_seed(2))
    whole = task.loss(params, batch)
    for shard in _shards(task, 3):  # rows 0-2, 3-4, 5-6: shards that begin on every kind
        mine = slice(shard.start, shard.stop)
        assert torch.equal(shard.init(torch.Generator().manual_seed(1)), params[mine])
        assert torch.equal(shard.sample_batch(torch.Generator().manual_seed(2)), batch[mine])
        assert torch.allclose(shard.loss(params[mine], batch[mine]), whole[mine], rtol=1e-6)


SMALL = MetaTrainConfig(task=TaskConfig(dim=4), horizon=20, unroll=5, problems=5, trajectories=4,
                        validation_problems=7, validate_every=2)


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_train_as_one_process_does(workers):
    one = meta_train(SMALL, progress=False)
    split = meta_train(SMALL, RuntimeConfig(workers=workers), progress=False)
    for name, tensor in one.meta_params.items():
        assert torch.allclose(split.meta_params[name], tensor, rtol=1e-5, atol=1e-7), name
    assert split.best_validation == pytest.approx(one.best_validation, rel=1e-5)
    assert [h["trajectory"] for h in split.history] == [h["trajectory"] for h in one.history]
    assert [h["meta_loss"] for h in split.history[1:]] == pytest.approx(
        [h["meta_loss"] for h in one.history[1:]], rel=1e-5)
    assert torch.get_num_threads() == 1  # given back after the workers' share


def test_workers_train_a_mixed_mlp_family_as_one_process_does(mnist_dir):
    # 6 problems over 4 processes: shards begin at instances 0, 2, 4, 5 (and the 4 validation
    # problems at 0, 1, 2, 3), so some begin on a ReLU instance.
    config = MetaTrainConfig(
        task=TaskConfig(name="mnist", hidden=(4,), activation="sigmoid,relu", batch_size=8),
        optimizer=LSTMOptimizerConfig(preprocessing="log_sign", output_init="zeros", hidden_size=4),
        horizon=6, unroll=3, problems=6, trajectories=2, validation_problems=4, validate_every=1, meta_lr=0.01,
    )
    one = meta_train(config, progress=False, data_dir=str(mnist_dir))
    split = meta_train(config, RuntimeConfig(workers=4), progress=False, data_dir=str(mnist_dir))
    for name, tensor in one.meta_params.items():
        assert torch.allclose(split.meta_params[name], tensor, rtol=1e-5, atol=1e-7), name
    assert [h["validation_loss"] for h in split.history] == pytest.approx(
        [h["validation_loss"] for h in one.history], rel=1e-5)


def _same_as_leader(value):
    current_group().same(value)


@pytest.mark.parametrize("value, expected", [(1.0, True), (2.0, False)])
def test_processes_that_start_differently_are_told_apart(value, expected):
    assert run_workers(_same_as_leader, (value,), 2, lambda: current_group().same(1.0)) is expected


def test_a_worker_that_exits_before_joining_is_an_error_not_a_wait():
    context = distributed.multiprocessing.get_context("spawn")
    process = context.Process(target=sys.exit, args=(3,))
    process.start()
    with pytest.raises(RuntimeError, match=r"exited before joining the run: .*exit 3"):
        distributed._wait_until_ready([process], context.Queue())


RUN = ["--dim", "4", "--horizon", "20", "--unroll", "5", "--problems", "6", "--trajectories", "40",
       "--validation-problems", "6", "--validate-every", "10", "--checkpoint-every", "2", "--quiet"]


def test_an_interrupted_run_of_workers_stops_together_and_resumes_in_one_process(tmp_path):
    run_dir = tmp_path / "run"
    # SIGTERM to process 0 alone, during trajectory 5: the workers must stop with it.
    stopped = run_stopping_at(signal.SIGTERM, 5, "meta-train", "--run-dir", str(run_dir), "--workers", "2",
                              "--threads", "2", *RUN)
    assert stopped.returncode == 130 and "--resume" in stopped.stderr and "Traceback" not in stopped.stderr, \
        stopped.stderr
    assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == 5
    assert main(["meta-train", "--resume", str(run_dir), "--workers", "1", "--threads", "1", "--quiet"]) == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == 40
    record = json.loads((run_dir / "run.json").read_text())
    assert record["runtime"]["workers"] == 2 and record["resumes"][0]["runtime"]["workers"] == 1


def test_bad_worker_counts_are_one_line_errors(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    assert main(["meta-train", "--run-dir", str(run_dir), *RUN, "--workers", "7"]) == 2
    assert "Invalid workers: 7 processes for 6 problems" in capsys.readouterr().err
    assert main(["meta-train", "--run-dir", str(run_dir), *RUN, "--workers", "0"]) == 2
    assert "Invalid workers: 0" in capsys.readouterr().err
    assert main(["meta-train", "--run-dir", str(run_dir), *RUN, "--workers", "3", "--validation-problems", "2"]) == 2
    assert "and 2 validation problems" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun
    assert main(["meta-train", "--run-dir", str(run_dir), *RUN, "--workers", "2"]) == 2
    assert "under a launcher of 2 processes (torchrun)" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--run-dir", str(run_dir)]) == 2
    assert "only meta-train runs" in capsys.readouterr().err
    assert not run_dir.exists()


def test_torchrun_processes_train_as_one_process_does(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    flags = [*RUN, "--trajectories", "4", "--threads", "1"]
    launched = subprocess.run([*torchrun, "-m", "optimizer3", "meta-train", "--run-dir", str(tmp_path / "two"), *flags],
                              capture_output=True, text=True, timeout=300)
    assert launched.returncode == 0, launched.stderr
    assert main(["meta-train", "--run-dir", str(tmp_path / "one"), *flags]) == 0
    one, two = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("one", "two"))
    for name, tensor in one["meta_params"].items():
        assert torch.allclose(two["meta_params"][name], tensor, rtol=1e-5, atol=1e-7), name
    assert json.loads((tmp_path / "two" / "run.json").read_text())["processes"] == 2
