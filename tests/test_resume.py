"""Interrupted meta-training resumes bit for bit; divergence never reaches the meta-parameters."""

import dataclasses
import json
import math
import signal
import subprocess
import sys

import pytest
import torch

from optimizer3.meta.config import MetaTrainConfig
from optimizer3.errors import UsageError
from optimizer3.meta import truncated_bptt
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta.trainer import MetaTrainingDiverged, meta_train
from optimizer3.meta.unroll import normalize_losses
from optimizer3.tasks import TaskConfig
from conftest import run_stopping_at

RUN = ["--dim", "4", "--horizon", "20", "--unroll", "5", "--problems", "16", "--trajectories", "60",
       "--validation-problems", "16", "--validate-every", "10", "--checkpoint-every", "2",
       "--threads", "1", "--quiet"]


def _cli(*args):
    return [sys.executable, "-m", "optimizer3", "meta-train", *args]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    subprocess.run(_cli("--run-dir", str(run_dir), *RUN), check=True, capture_output=True)
    return load_checkpoint(run_dir / "checkpoint.pt")


def _interrupt(run_dir, sig, at, run=RUN):
    """Run until `sig` arrives during trajectory `at`; the exit code and stderr."""
    result = run_stopping_at(sig, at, "meta-train", "--run-dir", str(run_dir), *run)
    return result.returncode, result.stderr


def _resume_until_done(run_dir):
    result = subprocess.run(_cli("--resume", str(run_dir), "--threads", "1", "--quiet"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return load_checkpoint(run_dir / "checkpoint.pt")


def _assert_identical(a, b):
    for key in ("meta_params", "best_meta_params", "average_params"):
        assert a[key].keys() == b[key].keys(), key
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["best_validation"] == b["best_validation"] and a["trajectory"] == b["trajectory"]


@pytest.mark.parametrize("sig, at", [(signal.SIGKILL, 9), (signal.SIGINT, 7), (signal.SIGTERM, 30)])
def test_killed_run_resumes_bit_identically(tmp_path, uninterrupted, sig, at):
    run_dir = tmp_path / "run"
    code, err = _interrupt(run_dir, sig, at)
    if sig == signal.SIGKILL:  # killed before trajectory 9's record: the checkpoint of 8 is kept
        assert code == -signal.SIGKILL
        assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == 8
    else:
        assert code == 130 and f"--resume {run_dir}" in err, err
        # A graceful stop checkpoints the trajectory it finished: nothing is lost.
        assert load_checkpoint(run_dir / "checkpoint.pt")["trajectory"] == at
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == at
    resumed = _resume_until_done(run_dir)
    _assert_identical(resumed, uninterrupted)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [eval(line.replace("null", "None"))["trajectory"] for line in lines] == list(range(1, 61))


def test_an_averaged_run_resumes_bit_identically(tmp_path):
    run = [*RUN, "--average-decay", "0.8"]
    subprocess.run(_cli("--run-dir", str(tmp_path / "whole"), *run), check=True, capture_output=True)
    uninterrupted = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    code, err = _interrupt(tmp_path / "run", signal.SIGINT, 13, run)
    assert code == 130, err
    resumed = _resume_until_done(tmp_path / "run")
    assert resumed["average_params"]
    _assert_identical(resumed, uninterrupted)


def test_resume_refuses_new_settings_and_reports_a_complete_run(tmp_path, uninterrupted, capsys):
    from optimizer3.cli import main

    run_dir = tmp_path / "run"
    assert main(["meta-train", "--run-dir", str(run_dir), *RUN, "--trajectories", "2"]) == 0
    assert main(["meta-train", "--resume", str(run_dir), "--horizon", "40"]) == 2
    assert "drop --horizon (only the flags of how it computes may change)" in capsys.readouterr().err
    assert main(["meta-train", "--resume", str(run_dir)]) == 0
    assert "is complete" in capsys.readouterr().out


def test_resume_may_change_how_the_run_computes_and_records_it(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    code, _ = _interrupt(run_dir, signal.SIGINT, 21)
    assert code == 130
    result = subprocess.run(_cli("--resume", str(run_dir), "--recompute-every", "2", "--matmul-dtype", "float32",
                                 "--threads", "1", "--quiet"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    resumed = load_checkpoint(run_dir / "checkpoint.pt")
    assert resumed["trajectory"] == 60 and resumed["config"] == uninterrupted["config"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["runtime"]["recompute_every"] == 0
    (entry,) = record["resumes"]
    assert entry["from_trajectory"] == 21 and entry["runtime"]["recompute_every"] == 2
    assert "--recompute-every 2" in entry["command"]
    # The same meta-gradients to rounding, which grows over 60 trajectories: the run ends near
    # where the uninterrupted one did (a restart from scratch would differ by tenths).
    for name, value in uninterrupted["meta_params"].items():
        torch.testing.assert_close(resumed["meta_params"][name], value, rtol=0, atol=0.02)
    assert resumed["best_validation"] == pytest.approx(uninterrupted["best_validation"], rel=0.05)


def test_resume_drops_a_log_line_torn_by_a_crash_and_names_a_corrupt_one(tmp_path):
    from optimizer3.errors import RunDirectoryError
    from optimizer3.meta.run_state import open_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"trajectory": 1}\n{"trajectory": 2}\n{"trajectory": 3}\n{"traj')
    open_metrics(tmp_path, 2).close()
    assert path.read_text() == '{"trajectory": 1}\n{"trajectory": 2}\n'
    path.write_text('{"trajectory": 1}\n{"traj\n{"trajectory": 3}\n')
    with pytest.raises(RunDirectoryError, match="metrics.jsonl line 2 is not JSON"):
        open_metrics(tmp_path, 2)
    assert path.read_text() == '{"trajectory": 1}\n{"traj\n{"trajectory": 3}\n'


def _poison_once_every(monkeypatch, every, after=0, value=math.nan):
    """Make every `every`-th truncation after the first `after` blow up to `value`."""
    original = truncated_bptt.unroll
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        meta_loss, carry, losses = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > after and calls["n"] % every == 0:
            meta_loss = meta_loss * value
        return meta_loss, carry, losses

    monkeypatch.setattr(truncated_bptt, "unroll", poisoned)


SMALL = MetaTrainConfig(task=TaskConfig(dim=4), horizon=20, unroll=5, problems=16, trajectories=12,
                        validation_problems=16, validate_every=4)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_meta_gradients_are_skipped_and_counted(monkeypatch, value):
    _poison_once_every(monkeypatch, every=7, value=value)
    result = meta_train(SMALL, progress=False)
    assert result.skipped >= 1
    assert all(torch.isfinite(v).all() for v in result.meta_params.values())
    assert sum(record.get("skipped", 0) for record in result.history) == result.skipped


def test_too_many_skips_in_a_row_stop_the_run_keeping_the_last_good_checkpoint(monkeypatch, tmp_path):
    config = dataclasses.replace(SMALL, max_skips=3, checkpoint_every=4)
    # Every truncation after the fourth trajectory (4 truncations each) blows up: trajectories
    # 5, 6 and 7 are skipped, and the run stops before it would checkpoint trajectory 8.
    _poison_once_every(monkeypatch, every=1, after=16)
    with pytest.raises(MetaTrainingDiverged, match="3 trajectories in a row ended in a meta-update"):
        meta_train(config, run_dir=tmp_path, progress=False)
    kept = load_checkpoint(tmp_path / "checkpoint.pt")
    assert kept["trajectory"] == 4 and kept["skipped"] == 0
    assert all(torch.isfinite(v).all() for v in kept["meta_params"].values())
    records = [line for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 6 and '"skipped": 1' in records[-1]


def test_loss_normaliser_caps_blown_up_losses():
    losses = torch.tensor([1.0, 50.0, float("nan"), float("inf")], requires_grad=True)
    initial = torch.tensor([2.0, 2.0, 2.0, 2.0])
    capped = normalize_losses(losses, initial, clip=10.0)
    assert capped.tolist() == [1.0, 20.0, 20.0, 20.0]
    capped.sum().backward()
    assert losses.grad.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert normalize_losses(losses, initial, clip=0.0) is losses
    with pytest.raises(UsageError, match="loss_clip"):
        dataclasses.replace(SMALL, loss_clip=-1.0)


def test_loss_clip_trains():
    result = meta_train(dataclasses.replace(SMALL, loss_clip=5.0), progress=False)
    assert result.best_validation < result.history[0]["validation_loss"]


def test_an_exploding_optimizee_is_skipped_not_learned_from():
    # A huge output scale makes the optimizee's loss overflow to inf within the horizon.
    config = dataclasses.replace(SMALL, trajectories=3, max_skips=10,
                                 optimizer=dataclasses.replace(SMALL.optimizer, output_scale=1e30))
    result = meta_train(config, progress=False)
    assert result.skipped >= 1
    assert all(torch.isfinite(v).all() for v in result.meta_params.values())
