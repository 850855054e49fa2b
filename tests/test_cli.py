"""The command line on tiny budgets, including bad input: one line, exit 2, nothing touched."""

import json
import os
import subprocess
import sys

import pytest
import torch

from optimizer3.cli import main

TINY = [
    "--quiet", "--threads", "1", "--dim", "4", "--horizon", "10", "--unroll", "5",
    "--problems", "8", "--trajectories", "2", "--validation-problems", "16",
    "--validate-every", "1",
]
TINY_EVAL = ["--test-problems", "16", "--tuning-problems", "16", "--bootstrap", "20",
             "--lr-min", "1e-3", "--lr-max", "1", "--per-decade", "3"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "quadratic"
    assert main(["reproduce", "quadratic", "--run-dir", str(run_dir), *TINY, *TINY_EVAL]) == 0
    return run_dir


def test_reproduce_writes_every_result(reproduced):
    for name in ("config.json", "run.json", "metrics.jsonl", "checkpoint.pt", "results.json",
                 "results.md", "loss_curves.png"):
        assert (reproduced / name).is_file(), name
    run = json.loads((reproduced / "run.json").read_text())
    assert run["command"].startswith("optimizer3 reproduce quadratic --run-dir ")
    assert run["code_version"].startswith("0.1.0")
    assert run["machine"]["cpu_count"] >= 1
    results = json.loads((reproduced / "results.json").read_text())
    assert set(results["summaries"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert set(results["learning_rates"]) == {"sgd", "nag", "rmsprop", "adam"}
    assert results["config"]["meta_train"]["horizon"] == 10
    assert (reproduced / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| lstm | learned |" in (reproduced / "results.md").read_text()


def test_meta_train_then_evaluate_on_a_bigger_dimension(tmp_path, reproduced):
    assert main(["meta-train", "--run-dir", str(tmp_path / "train"), *TINY]) == 0
    out = tmp_path / "eval"
    code = main(["evaluate", "--checkpoint", str(tmp_path / "train" / "checkpoint.pt"),
                 "--run-dir", str(out), "--dim", "6", "--baselines", "adam", "--quiet", *TINY_EVAL])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["task"]["dim"] == 6 and set(results["summaries"]) == {"lstm", "adam"}


def _fails_cleanly(capsys, argv, *needles):
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    "extra,needles",
    [(["--task", "mnist"], ["unrecognized arguments: --task mnist"]),
     (["--hidden", "30"], ["unrecognized arguments: --hidden 30"]),
     (["--baselines", "sgd", "adagrad"], ["adagrad"]),
     (["--horizon", "100", "--unroll", "30"], ["30", "does not divide", "100"]),
     (["--horizon", "0"], ["horizon: 0"]),
     (["--trajectories", "-3"], ["-3"]),
     (["--preprocessing", "sqrt"], ["sqrt"]),
     (["--test-seed", "0"], ["test_seed: 0"]),
     (["--meta-lr", "abc"], ["abc"])],
)
def test_bad_reproduce_input(tmp_path, capsys, extra, needles):
    run_dir = tmp_path / "run"
    _fails_cleanly(capsys, ["reproduce", "quadratic", "--run-dir", str(run_dir), *TINY, *extra], *needles)
    assert not run_dir.exists()


def test_unknown_experiment(capsys):
    _fails_cleanly(capsys, ["reproduce", "mnist-3d"], "mnist-3d")


def test_existing_run_directory_is_never_overwritten(tmp_path, capsys, reproduced):
    before = {p.name: p.read_bytes() for p in reproduced.iterdir()}
    _fails_cleanly(capsys, ["reproduce", "quadratic", "--run-dir", str(reproduced), *TINY],
                   str(reproduced), "--overwrite")
    _fails_cleanly(capsys, ["meta-train", "--run-dir", str(reproduced), *TINY], "--overwrite")
    assert {p.name: p.read_bytes() for p in reproduced.iterdir()} == before


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, capsys, reproduced):
    blocker = tmp_path / "a-file"
    blocker.write_text("mine")
    _fails_cleanly(capsys, ["meta-train", "--run-dir", str(blocker / "run"), *TINY],
                   "Cannot create run directory", str(blocker / "run"))
    out = blocker / "pretrained"
    _fails_cleanly(capsys, ["export", str(reproduced), "--name", "tiny", "--out", str(out), "--purpose", "p", "--description", "x"],
                   "Cannot create the output directory", str(out))
    assert blocker.read_text() == "mine"


def test_bad_checkpoints(tmp_path, capsys, reproduced):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:  # argparse: the run directory is required
        main(["evaluate", "--checkpoint", str(reproduced / "checkpoint.pt")])
    assert exit_info.value.code == 2 and "--run-dir" in capsys.readouterr().err
    _fails_cleanly(capsys, ["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--run-dir", str(out)],
                   "not found", "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    _fails_cleanly(capsys, ["evaluate", "--checkpoint", str(corrupt), "--run-dir", str(out)], "corrupt.pt")
    raw = torch.load(reproduced / "checkpoint.pt", weights_only=True)
    raw["meta_params"]["lstm.0.weight"] = torch.zeros(3, 3)
    torch.save(raw, tmp_path / "other.pt")
    _fails_cleanly(capsys, ["evaluate", "--checkpoint", str(tmp_path / "other.pt"), "--run-dir", str(out)],
                   "lstm.0.weight", "another architecture")
    assert not out.exists()


def test_help_documents_every_knob_in_groups_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "quadratic", "--help"])
    text = capsys.readouterr().out
    for flag in ("--horizon", "--unroll", "--meta-lr", "--second-order", "--preprocessing",
                 "--output-scale", "--clip-grad-norm", "--loss-weights", "--lr-min", "--test-seed", "--device"):
        assert flag in text
    for title in ("task:", "learned-optimizer architecture:", "meta-training:", "evaluation:", "how it computes:"):
        assert f"\n{title}\n" in text
    assert "Config:" not in text


def _help(capsys, *argv):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_defaults_that_apply_to_each_command_and_experiment(capsys):
    assert "held-out test problems (default: 1000)" in _help(capsys, "reproduce", "quadratic")
    mnist = _help(capsys, "reproduce", "mnist")
    assert "held-out test problems (default: 100)" in mnist and "smallest learning rate tried (default: 0.001)" in mnist
    assert "seed of meta-parameter initialization and training problems (default: the recipe's)" in mnist
    evaluate = _help(capsys, "evaluate")
    assert "(default: the optimizer's training task's)" in evaluate and "--matmul-dtype" not in evaluate
    assert "--recompute-every" in _help(capsys, "meta-train")


def test_version_and_errors_that_point_at_the_subcommands_help(capsys):
    from optimizer3 import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith(f"optimizer3 {__version__} (torch ")
    _fails_cleanly(capsys, ["meta-train", "--horizon", "x"], "see 'optimizer3 meta-train --help'")
    _fails_cleanly(capsys, ["reproduce", "quadratic", "--horizon", "0", "--run-dir", "nowhere"],
                   "horizon: 0", "(see 'optimizer3 reproduce quadratic --help')")


def test_a_run_config_file_is_a_preset_that_flags_override(tmp_path, reproduced):
    run_dir = tmp_path / "again"
    code = main(["meta-train", "--config", str(reproduced / "config.json"), "--run-dir", str(run_dir),
                 "--trajectories", "1", "--quiet", "--threads", "1"])
    assert code == 0
    written = json.loads((run_dir / "config.json").read_text())["meta_train"]
    original = json.loads((reproduced / "config.json").read_text())["meta_train"]
    assert written == dict(original, trajectories=1)
    # The config.json of a run before 2026-12-05 also held how it computed, at the defaults here.
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"meta_train": dict(original, compile=False, device="cpu", workers=1,
                                                  matmul_dtype="float32", recompute_every=0)}))
    assert main(["meta-train", "--config", str(old), "--run-dir", str(tmp_path / "old"), "--trajectories", "1",
                 "--quiet", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "old" / "config.json").read_text())["meta_train"] == written


@pytest.mark.parametrize(
    "content,needle",
    [("{not json", "Cannot read config file"),
     ('{"meta_train": {"horizon": 10, "warp": 3}}', "warp"),
     ('{"meta_train": {"horizon": "long"}}', "horizon"),
     ('{"training": {}}', "meta_train and/or evaluation"),
     ('{"meta_train": {"task": {"hidden": [20.5]}}}', "Invalid hidden: [20.5]; expected a list of int"),
     ('{"meta_train": {"task": {"mix_hidden": [40]}}}', "Invalid mix_hidden: [40]; expected a list of str"),
     ('{"meta_train": {"task": {"name": "mnist"}}}', "reproduce quadratic runs the quadratic task, not --task mnist"),
     ('{"meta_train": {"device": "cuda"}}', "sets device = 'cuda', how a command computes"),
     ('{"evaluation": {"baselines": []}}', "Invalid baselines: none given"),
     ('{"evaluation": {"grid": {"max_extensions": -1}}}', "max_extensions: -1")],
)
def test_bad_config_files(tmp_path, capsys, content, needle):
    path = tmp_path / "config.json"
    path.write_text(content)
    _fails_cleanly(capsys, ["reproduce", "quadratic", "--config", str(path), "--run-dir", str(tmp_path / "r")],
                   needle)
    assert not (tmp_path / "r").exists()


def _no_download(monkeypatch):
    """Every data set's mirrors point at a closed port on this machine: no network."""
    import dataclasses

    from optimizer3.tasks import images

    for name, spec in list(images.DATASETS.items()):
        monkeypatch.setitem(images.DATASETS, name, dataclasses.replace(spec, mirrors=("http://127.0.0.1:9/",)))


def test_missing_data_stops_before_the_run_directory_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPTIMIZER3_DATA_DIR", raising=False)
    _no_download(monkeypatch)
    run_dir = tmp_path / "run"
    _fails_cleanly(capsys, ["meta-train", "--task", "mnist", "--data-dir", str(tmp_path / "nothing"),
                            "--run-dir", str(run_dir), "--quiet"], "MNIST not found", "--data-dir")
    assert not run_dir.exists()


def _spoil(directory, how):
    """Make the MNIST copy in `directory` bad in one way."""
    import gzip

    labels = directory / "train-labels-idx1-ubyte.gz"
    if how == "missing":
        labels.unlink()
    elif how == "truncated":
        images = directory / "train-images-idx3-ubyte.gz"
        images.write_bytes(images.read_bytes()[:100_000])
    elif how == "mislabeled":
        data = bytearray(gzip.decompress(labels.read_bytes()))
        data[8 + 17] = 12
        labels.write_bytes(gzip.compress(bytes(data)))
    elif how == "counts":
        labels.write_bytes((directory / "t10k-labels-idx1-ubyte.gz").read_bytes())


@pytest.mark.parametrize("how,needles", [
    ("missing", ["lacks train-labels-idx1-ubyte", "--data-dir"]),
    ("truncated", ["train-images-idx3-ubyte.gz is not a valid gzip file"]),
    ("mislabeled", ["train-labels-idx1-ubyte.gz", "label 12"]),
    ("counts", ["holds 60000 images but", "10000 labels"]),
])
def test_a_bad_data_directory_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch, mnist_dir,
                                                                     how, needles):
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("OPTIMIZER3_DATA_DIR", raising=False)
    _no_download(monkeypatch)
    bad = tmp_path / "data"
    shutil.copytree(mnist_dir, bad)
    _spoil(bad, how)
    _fails_cleanly(capsys, ["meta-train", "--task", "mnist", "--data-dir", str(bad), "--run-dir", str(tmp_path / "run"),
                            "--quiet"], *needles)
    assert not (tmp_path / "run").exists()


def test_a_layer_of_zero_units_is_refused(tmp_path, capsys, mnist_dir):
    _fails_cleanly(capsys, ["meta-train", "--task", "mnist", "--data-dir", str(mnist_dir), "--hidden", "20", "0",
                            "--run-dir", str(tmp_path / "run")], "Invalid hidden layer sizes: [20, 0]")
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_is_refused(tmp_path, capsys, mnist_dir):
    _fails_cleanly(capsys, ["meta-train", "--task", "mnist", "--data-dir", str(mnist_dir),
                            "--batch-size", "20000", "--run-dir", str(tmp_path / "run")],
                   "batch size: 20000")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra,needles",
    [(["--baselines", "adagrad"], ["adagrad"]), (["--steps", "-5"], ["steps: -5"]),
     (["--test-seed", "1"], ["test_seed: 1"]), (["--task", "cubic"], ["cubic"]),
     (["--lr-min", "0"], ["[0.0, 1.0]"]), (["--activation", "sigmoid,swish"], ["'sigmoid,swish'", "commas"]),
     (["--workers", "0"], ["workers: 0"]), (["--lr-max", "inf"], ["[0.0001, inf]", "finite"]),
     (["--test-seed", "-2"], ["test_seed: -2"])],
)
def test_bad_evaluate_input_touches_nothing(tmp_path, capsys, reproduced, extra, needles):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails_cleanly(capsys, ["evaluate", "--checkpoint", str(reproduced / "checkpoint.pt"),
                            "--run-dir", str(out), "--overwrite", *extra], *needles)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"


def test_export_then_list_and_evaluate_the_exported_optimizer(tmp_path, reproduced, capsys, monkeypatch):
    from optimizer3 import pretrained
    from optimizer3.optim.learned import LearnedOptimizer

    out = tmp_path / "pretrained"
    assert main(["export", str(reproduced), "--name", "tiny", "--out", str(out),
                 "--purpose", "a test optimizer", "--description", "made by a test"]) == 0
    card = json.loads((out / "tiny.json").read_text())
    assert card["sha256"] == pretrained.sha256(out / "tiny.pt")
    assert card["meta_training"]["command"].startswith("optimizer3 reproduce quadratic")
    assert card["meta_training"]["seconds"] > 0 and card["meta_training"]["seed"] == 0
    assert set(card["evaluation"]["final_loss"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
    assert torch.load(out / "tiny.pt", weights_only=True)["kind"] == "optimizer3.learned_optimizer"
    LearnedOptimizer.from_file(out / "tiny.pt", [torch.nn.Parameter(torch.zeros(3))])

    # Nothing is overwritten without --overwrite.
    before = (out / "tiny.pt").read_bytes()
    assert main(["export", str(reproduced), "--name", "tiny", "--out", str(out), "--purpose", "p", "--description", "x"]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "tiny.pt").read_bytes() == before

    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", out)
    capsys.readouterr()
    assert main(["list-pretrained"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("Which one to use:") and "\ntiny: a test optimizer\n" in listing
    assert "optimizer3 reproduce quadratic" in listing
    run_dir = tmp_path / "eval"
    assert main(["evaluate", "--pretrained", "tiny", "--run-dir", str(run_dir), "--quiet", "--threads", "1",
                 *TINY_EVAL]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["learned_optimizer"] == "tiny"
    assert main(["evaluate", "--pretrained", "nope", "--run-dir", str(tmp_path / "x")]) == 2
    assert "No pretrained optimizer named 'nope'; available: tiny" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (out / "tiny.pt").write_bytes(before[:-1] + bytes([before[-1] ^ 1]))  # one bit changed
    assert main(["evaluate", "--pretrained", "tiny", "--run-dir", str(tmp_path / "y")]) == 2
    assert "does not match its card's SHA-256" in capsys.readouterr().err


def test_export_refuses_an_evaluation_of_another_run(tmp_path, reproduced, capsys):
    other = tmp_path / "other"
    assert main(["meta-train", "--run-dir", str(other), *TINY, "--seed", "5"]) == 0
    code = main(["export", str(other), "--name", "x", "--evaluation", str(reproduced),
                 "--out", str(tmp_path / "out"), "--purpose", "p", "--description", "x"])
    assert code == 2
    assert "is not an evaluation of the best optimizer" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # A generalization test of the right optimizer is not its evaluation either.
    wider = tmp_path / "wider"
    assert main(["evaluate", "--checkpoint", str(reproduced / "checkpoint.pt"), "--dim", "6", "--run-dir",
                 str(wider), "--quiet", "--threads", "1", *TINY_EVAL]) == 0
    code = main(["export", str(reproduced), "--name", "x", "--evaluation", str(wider),
                 "--out", str(tmp_path / "out"), "--purpose", "p", "--description", "x"])
    assert code == 2 and "on its training task" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_from_a_run_without_its_log_writes_nothing(tmp_path, reproduced, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(reproduced, run)
    out = tmp_path / "pretrained"
    assert main(["export", str(run), "--name", "tiny", "--out", str(out), "--purpose", "p", "--description", "x"]) == 0
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    (run / "metrics.jsonl").unlink()
    for name, extra in (("tiny", ["--overwrite"]), ("other", [])):
        code = main(["export", str(run), "--name", name, "--out", str(out), "--purpose", "p", "--description", "y", *extra])
        assert code == 2 and "Cannot read the meta-training log" in capsys.readouterr().err
        assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_overwrite_removes_the_old_runs_checkpoint_before_training(tmp_path, monkeypatch, capsys):
    from optimizer3.meta import trainer

    run_dir = tmp_path / "run"
    assert main(["meta-train", "--run-dir", str(run_dir), *TINY]) == 0
    assert (run_dir / "checkpoint.pt").is_file()

    def crash(*args, **kwargs):
        raise RuntimeError("crashed before its first checkpoint")

    monkeypatch.setattr(trainer, "_advance", crash)
    with pytest.raises(RuntimeError, match="first checkpoint"):
        main(["meta-train", "--run-dir", str(run_dir), "--overwrite", *TINY, "--seed", "7"])
    # Nothing of the old run is left to be resumed or exported under the new run's record.
    assert not (run_dir / "checkpoint.pt").exists()
    assert main(["meta-train", "--resume", str(run_dir)]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_meta_train_from_a_shipped_optimizer_records_which_one(tmp_path, capsys):
    from optimizer3 import pretrained
    from optimizer3.learned.files import load_learned_optimizer, meta_params_digest

    run_dir = tmp_path / "fine-tune"
    assert main(["meta-train", "--init-from", "quadratic", "--run-dir", str(run_dir), *TINY]) == 0
    shipped = load_learned_optimizer(pretrained.pretrained_path("quadratic")).meta_params
    run = json.loads((run_dir / "run.json").read_text())
    assert run["init_from_meta_params_sha256"] == meta_params_digest(shipped)
    assert json.loads((run_dir / "config.json").read_text())["meta_train"]["init_from"] == "quadratic"
    _fails_cleanly(capsys, ["meta-train", "--init-from", "mnist", "--run-dir", str(tmp_path / "other"), *TINY],
                   "--init-from mnist", "architecture")
    _fails_cleanly(capsys, ["meta-train", "--init-from", "nothing.pt", "--run-dir", str(tmp_path / "other"), *TINY],
                   "nothing.pt", "quadratic")
    assert not (tmp_path / "other").exists()


def test_runtime_flags_make_one_runtime_config_apart_from_the_experiment():
    from optimizer3.cli import build_parser
    from optimizer3.flags import config_from_args
    from optimizer3.runtime import RuntimeConfig

    args = build_parser().parse_args(["reproduce", "quadratic", "--compile", "--workers", "2", "--threads", "1"])
    assert config_from_args(RuntimeConfig, args, RuntimeConfig()) == RuntimeConfig(compile=True, workers=2, threads=1)


def test_compile_without_a_compiler_and_a_bad_start_stop_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    _fails_cleanly(capsys, ["evaluate", "--pretrained", "quadratic", "--compile", "--run-dir",
                            str(tmp_path / "eval")], "--compile needs a C++ compiler", "no-such-compiler")
    _fails_cleanly(capsys, ["reproduce", "quadratic", "--init-from", "nothing.pt", "--run-dir",
                            str(tmp_path / "rq"), *TINY], "nothing.pt")
    assert not (tmp_path / "eval").exists() and not (tmp_path / "rq").exists()


def test_a_closed_output_pipe_ends_quietly_with_the_sigpipe_status(monkeypatch):
    def reader_gone(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("optimizer3.pretrained.describe", reader_gone)
    assert main(["list-pretrained"]) == 141


def test_the_command_into_a_closed_pipe_exits_with_the_sigpipe_status_and_no_traceback():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte
    try:
        finished = subprocess.run([sys.executable, "-m", "optimizer3", "list-pretrained"], stdout=write_end,
                                  stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert finished.returncode == 141
    assert finished.stderr == ""


@pytest.mark.parametrize("flags, hidden, mix_hidden", [
    ([], (20,), ("20,20", "40")),
    (["--hidden", "40"], (40,), ()),
    (["--hidden", "30", "--mix-hidden", "20,20"], (30,), ("20,20",)),
    (["--activation", "tanh"], (20,), ("20,20", "40")),
])
def test_evaluate_tests_the_architecture_that_hidden_names(flags, hidden, mix_hidden):
    from optimizer3.cli import build_parser, evaluation_task
    from optimizer3.tasks import TaskConfig

    args = build_parser().parse_args(["evaluate", "--pretrained", "mnist", "--run-dir", "x", *flags])
    task = evaluation_task(args, TaskConfig(name="mnist", mix_hidden=("20,20", "40")))
    assert (task.hidden, task.mix_hidden) == (hidden, mix_hidden)


def test_quiet_prints_only_the_result_and_progress_goes_to_stderr_otherwise(tmp_path, capsys):
    assert main(["meta-train", "--run-dir", str(tmp_path / "quiet"), *TINY]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("best validation loss") and len(captured.out.splitlines()) == 1
    assert captured.err == ""
    loud = [flag for flag in TINY if flag != "--quiet"]
    assert main(["meta-train", "--run-dir", str(tmp_path / "loud"), *loud]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("config: {") and "meta-train" in captured.err  # the progress bar
