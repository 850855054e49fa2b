"""PES meta-training (meta/pes_trainer.py) and `optimizer3 reproduce general`: it learns, it
resumes exactly after a stop, workers agree with one process, it stops when every estimate is
non-finite, and bad settings are one line."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from optimizer3.cli import main
from optimizer3.errors import UsageError
from optimizer3.learned.files import load_learned_optimizer, read_plain_dict
from optimizer3.learned.mlp import MLPOptimizerConfig
from optimizer3.meta.config import PESTrainConfig
from optimizer3.meta.pes_trainer import pes_meta_train
from optimizer3.meta.trainer import MetaTrainingDiverged
from optimizer3.runtime import RuntimeConfig

# Quadratics only: no data files, a few seconds.
SMALL = PESTrainConfig(tasks=("quadratic-10",), pairs=8, meta_steps=40, validate_every=20, validation_steps=30,
                       validation_problems=2, min_horizon=20, max_horizon=40, meta_lr=0.03)


def test_meta_training_lowers_the_validation_loss():
    result = pes_meta_train(SMALL, progress=False)
    validations = [record["validation"] for record in result.history if "validation" in record]
    assert len(validations) == 3  # at the start, after 20 and after 40 meta-steps
    assert result.best_validation < validations[0] - 0.1
    assert result.best_validation == min(validations)


def test_the_checkpoint_is_a_learned_optimizer_file_of_its_best(tmp_path):
    result = pes_meta_train(SMALL, run_dir=tmp_path, progress=False)
    loaded = load_learned_optimizer(tmp_path / "checkpoint.pt")
    assert isinstance(loaded.config, MLPOptimizerConfig)
    assert all(torch.equal(loaded.meta_params[name], result.best_meta_params[name]) for name in loaded.meta_params)
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # a plain dict


_STOP_AFTER_CHAIN = """
import os, sys
from optimizer3.meta import pes_trainer
run_chain = pes_trainer.run_chain
sent = []
def run_chain_then_signal(config, state, *rest):
    record = run_chain(config, state, *rest)
    if state.meta_step >= {at} and not sent:  # the chain's validation and checkpoint still come
        sent.append(os.kill(os.getpid(), {sig}))
    return record
pes_trainer.run_chain = run_chain_then_signal
sys.argv[0] = "optimizer3"
from optimizer3.cli import run
run()
"""

FLAGS = ["--tasks", "quadratic-10", "--pairs", "8", "--meta-steps", "40", "--validate-every", "20",
         "--validation-steps", "30", "--validation-problems", "2", "--min-horizon", "20", "--max-horizon", "40",
         "--meta-lr", "0.03", "--threads", "1"]


def _reproduce(run_dir, *extra):
    return ["reproduce", "general", "--run-dir", str(run_dir), "--quiet", *FLAGS, *extra]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_resumes_exactly(tmp_path, sig):
    # Stopped in the chain of its first validation after the start, then continued by the same
    # command, the meta-training ends where an uninterrupted one ends. (--meta-only: no benchmark.)
    (tmp_path / "whole").mkdir()
    whole = pes_meta_train(SMALL, run_dir=tmp_path / "whole", progress=False)
    stopped = tmp_path / "stopped"
    script = _STOP_AFTER_CHAIN.format(at=20, sig=int(sig))
    first = subprocess.run([sys.executable, "-c", script, *_reproduce(stopped, "--meta-only")],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 130, first.stderr
    assert "Interrupted after meta-step" in first.stderr and "continue with the same command" in first.stderr
    halfway = read_plain_dict(stopped / "checkpoint.pt")
    assert 20 <= halfway["meta_step"] < 40 and len(halfway["validations"]) == 2
    assert main(_reproduce(stopped, "--meta-only")) == 0
    resumed, uninterrupted = read_plain_dict(stopped / "checkpoint.pt"), read_plain_dict(tmp_path / "whole" / "checkpoint.pt")
    for key in ("meta_params", "best_meta_params"):
        for name, tensor in uninterrupted[key].items():
            assert torch.equal(resumed[key][name], tensor), (key, name)
    for key in ("best_validation", "validations", "meta_step", "chains"):
        assert resumed[key] == uninterrupted[key], key
    assert torch.equal(resumed["rng"], uninterrupted["rng"])
    assert whole.best_validation == uninterrupted["best_validation"]


def test_workers_agree_with_one_process():
    config = PESTrainConfig(**{**SMALL.__dict__, "meta_steps": 10, "validate_every": 10})
    alone = pes_meta_train(config, progress=False)
    together = pes_meta_train(config, RuntimeConfig(workers=2), progress=False)
    for name, tensor in alone.meta_params.items():
        torch.testing.assert_close(together.meta_params[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_run_whose_estimates_are_all_non_finite_stops(tmp_path):
    # Steps of 1e30 overflow every quadratic's loss: no finite estimate, ever.
    config = PESTrainConfig(**{**SMALL.__dict__, "optimizer": MLPOptimizerConfig(initial_lr=1e30), "max_skips": 3})
    with pytest.raises(MetaTrainingDiverged, match="3 chains in a row"):
        pes_meta_train(config, run_dir=tmp_path, progress=False)
    assert read_plain_dict(tmp_path / "checkpoint.pt")["skipped"] == 2  # the last good checkpoint


@pytest.mark.parametrize("change, message", [
    ({"tasks": ("mnist-cnn",)}, "Invalid meta-training task: 'mnist-cnn'"),
    ({"pairs": 0}, "Invalid pairs: 0"),
    ({"min_horizon": 50, "max_horizon": 20}, "Invalid horizons"),
    ({"sigma": 0.0}, "Invalid sigma: 0.0"),
    ({"seed": 1}, "seeds are both 1"),
])
def test_bad_settings_are_refused_by_name(change, message):
    with pytest.raises(UsageError, match=message):
        PESTrainConfig(**change)


def test_bad_input_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, capsys):
    assert main(["reproduce", "general", "--run-dir", str(tmp_path / "run"), "--tasks", "text-transformer"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "text-transformer" in error
    assert not (tmp_path / "run").exists()


def test_a_run_directory_of_other_settings_is_refused(tmp_path, capsys):
    assert main(_reproduce(tmp_path, "--meta-only")) == 0
    assert main(_reproduce(tmp_path, "--meta-only", "--sigma", "0.02")) == 2
    assert "holds another run" in capsys.readouterr().err


def test_export_needs_the_full_benchmark_of_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_reproduce(run, "--meta-only")) == 0
    assert (run / "general.pt").is_file()
    code = main(["export", str(run), "--name", "mine", "--out", str(tmp_path / "out"), "--purpose", "p",
                 "--description", "d"])
    assert code == 2
    assert "no finished reproduce general run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
