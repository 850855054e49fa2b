"""`optimizer3 reproduce mnist` end to end on tiny budgets with the real MNIST files."""

import json

import pytest

from optimizer3 import pretrained
from optimizer3.cli import main
from optimizer3.errors import UsageError
from optimizer3.experiments.mnist import REPRODUCE_OPTIMIZER

TINY_MNIST = ["--task", "mnist", "--preprocessing", "log_sign", "--output-init", "zeros",
              "--horizon", "4", "--unroll", "2", "--problems", "1", "--trajectories", "1",
              "--validation-problems", "1", "--validate-every", "1"]
TINY_EVAL = ["--test-problems", "2", "--tuning-problems", "1", "--bootstrap", "20",
             "--lr-min", "0.01", "--lr-max", "1", "--per-decade", "3"]
COMMON = ["--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, mnist_dir):
    """A tiny MNIST optimizer of two stages (the second fine-tunes the first) exported under the
    name `reproduce mnist` uses by default, in a directory of its own."""
    root = tmp_path_factory.mktemp("mnist")
    data = ["--data-dir", str(mnist_dir)]
    start = []
    for stage, name in (("base", "tiny-base"), ("final", REPRODUCE_OPTIMIZER)):
        assert main(["meta-train", "--run-dir", str(root / stage), *TINY_MNIST, *start, *COMMON, *data]) == 0
        assert main(["evaluate", "--checkpoint", str(root / stage / "checkpoint.pt"), "--run-dir",
                     str(root / f"{stage}-eval"), *TINY_EVAL, *COMMON, *data]) == 0
        out = root / ("bases" if stage == "base" else "pretrained")
        assert main(["export", str(root / stage), "--name", name, "--evaluation", str(root / f"{stage}-eval"),
                     "--out", str(out), "--purpose", "a test", "--description", f"tiny test optimizer, {stage}"]) == 0
        start = ["--init-from", str(out / f"{name}.pt"), "--seed", "4"]
    return root / "pretrained"


def test_an_exported_optimizer_records_the_stages_that_made_it(shipped):
    card = json.loads((shipped / f"{REPRODUCE_OPTIMIZER}.json").read_text())
    assert [stage["command"].split("--run-dir")[1].split()[0].rsplit("/", 1)[1] for stage in card["recipe"]] == [
        "base", "final"]


def test_reproduce_mnist_with_the_shipped_optimizer_writes_five_experiments(tmp_path, shipped, mnist_dir,
                                                                            monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    run_dir = tmp_path / "experiments"
    assert main(["reproduce", "mnist", "--run-dir", str(run_dir), "--data-dir", str(mnist_dir),
                 *TINY_EVAL, *COMMON]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    rows = {row["key"]: row for row in results["experiments"]}
    assert set(rows) == set("abcde")
    assert rows["b"]["steps"] == 2 * rows["a"]["steps"] == 8
    for key in "abcde":
        detail = json.loads((run_dir / key / "results.json").read_text())
        assert set(detail["summaries"]) == {"lstm", "sgd", "nag", "rmsprop", "adam"}
        assert 0 <= detail["summaries"]["lstm"]["test_accuracy"] <= 1
        assert (run_dir / key / "loss_curves.png").is_file()
    assert json.loads((run_dir / "c" / "results.json").read_text())["config"]["task"]["hidden"] == [40]
    assert json.loads((run_dir / "d" / "results.json").read_text())["config"]["task"]["hidden"] == [20, 20]
    assert json.loads((run_dir / "e" / "results.json").read_text())["config"]["task"]["activation"] == "relu"
    assert (run_dir / "experiments.png").read_bytes()[:4] == b"\x89PNG"
    assert "| (a) base network, 4 steps |" in (run_dir / "results.md").read_text()
    assert f"pretrained '{REPRODUCE_OPTIMIZER}'" in results["learned_optimizer"]
    assert json.loads((run_dir / "a" / "results.json").read_text())["config"]["task"]["hidden"] == [20]


def test_reproduce_mnist_meta_trains_a_fresh_optimizer_on_request(tmp_path, shipped, mnist_dir, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    run_dir = tmp_path / "fresh"
    data = ["--data-dir", str(mnist_dir)]
    # Meta-training flags without --meta-train are refused, before anything is written.
    assert main(["reproduce", "mnist", "--run-dir", str(run_dir), "--seed", "3", *data, *COMMON]) == 2
    assert "add --meta-train" in capsys.readouterr().err
    assert main(["reproduce", "mnist", "--run-dir", str(run_dir), "--steps", "50", *data, *COMMON]) == 2
    assert "drop --steps" in capsys.readouterr().err
    assert not run_dir.exists()
    assert main(["reproduce", "mnist", "--meta-train", "--seed", "3", "--run-dir", str(run_dir), *data,
                 *TINY_EVAL, *COMMON]) == 0
    # Both stages of the recipe ran again, with the seed given, the second from the first.
    first, second = (json.loads((run_dir / stage / "config.json").read_text())["meta_train"]
                     for stage in ("stage1", "stage2"))
    assert first["seed"] == second["seed"] == 3 and first["init_from"] == ""
    assert second["init_from"] == str(run_dir / "stage1" / "checkpoint.pt")
    assert (run_dir / "stage2" / "checkpoint.pt").is_file()
    assert json.loads((run_dir / "config.json").read_text())["meta_train"]["seed"] == 3
    assert "meta-trained in this run" in json.loads((run_dir / "results.json").read_text())["learned_optimizer"]


def test_the_experiments_of_a_mixed_activation_family_use_its_first_activation_then_relu():
    from optimizer3.experiments.mnist import mnist_experiments
    from optimizer3.tasks import TaskConfig

    experiments = mnist_experiments(TaskConfig(name="mnist", activation="tanh,relu"), horizon=50)
    assert [e.task.activation for e in experiments] == ["tanh", "tanh", "tanh", "tanh", "relu"]
    assert [e.task.hidden for e in experiments] == [(20,), (20,), (40,), (20, 20), (20,)]
    assert [e.steps for e in experiments] == [50, 100, 50, 50, 50]


def test_a_mixed_family_is_named_in_the_report_and_a_single_one_is_not():
    from optimizer3.experiments.mnist import training_note
    from optimizer3.tasks import TaskConfig

    note = training_note(TaskConfig(name="mnist", activation="sigmoid,relu"))
    assert "--activation sigmoid,relu" in note and "first, sigmoid" in note and "(e) tests no generalization" in note
    assert "(e)" not in training_note(TaskConfig(name="mnist", activation="sigmoid,tanh"))
    assert training_note(TaskConfig(name="mnist", activation="relu")) == ""


def test_the_experiments_use_the_papers_networks_whatever_the_optimizer_was_trained_on():
    from optimizer3.experiments.mnist import mnist_experiments, training_note
    from optimizer3.tasks import TaskConfig

    for task in (TaskConfig(name="mnist", hidden=(30,), mix_hidden=("20,20",), batch_size=64),
                 TaskConfig(name="mnist", hidden=(20, 20), batch_size=64)):
        experiments = mnist_experiments(task, horizon=50)
        assert [e.task.hidden for e in experiments] == [(20,), (20,), (40,), (20, 20), (20,)]
        assert all(e.task.mix_hidden == () and e.task.batch_size == 64 for e in experiments)
    note = training_note(TaskConfig(name="mnist", hidden=(30,), mix_hidden=("20,20",)))
    assert "--hidden 30 --mix-hidden 20,20" in note and "which it did not see" in note
    assert "(d) tests no generalization" in note and "(c)" not in note
    note = training_note(TaskConfig(name="mnist", hidden=(20, 20)))
    assert "784-20-20-10 networks (`--hidden 20 20`)" in note and "(d) tests no generalization" in note
    note = training_note(TaskConfig(name="mnist", hidden=(20, 20)), init_from="mnist-mix8")
    assert "fine-tuned from `mnist-mix8` on 784-20-20-10" in note and "which the fine-tuning did not see" in note
    note = training_note(TaskConfig(name="mnist", mix_hidden=("20,20", "40")))
    assert "(c) and (d) test no" in note and "did not see" not in note
    assert "no generalization" not in training_note(TaskConfig(name="mnist", mix_hidden=("30",)))
    assert training_note(TaskConfig(name="mnist")) == ""


@pytest.mark.parametrize("spec", ["20,x", "20,", "0", ""])
def test_a_bad_architecture_is_refused(spec):
    from optimizer3.tasks import TaskConfig

    with pytest.raises(UsageError, match=f"Invalid architecture: '{spec}'"):
        TaskConfig(name="mnist", mix_hidden=(spec,))


def test_a_family_mixes_architectures_or_activations_not_both():
    from optimizer3.tasks import TaskConfig

    with pytest.raises(UsageError, match="mixes architectures or activations, not both"):
        TaskConfig(name="mnist", mix_hidden=("40",), activation="sigmoid,relu")


def test_workers_run_the_optimizers_side_by_side_with_the_same_results(tmp_path, shipped, mnist_dir, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", shipped)
    data = ["--data-dir", str(mnist_dir)]
    for workers in ("1", "2"):
        assert main(["reproduce", "mnist", "--run-dir", str(tmp_path / workers), "--workers", workers,
                     *data, *TINY_EVAL, *COMMON]) == 0
    for key in "abcde":
        one, two = (json.loads((tmp_path / workers / key / "results.json").read_text()) for workers in "12")
        for field in ("summaries", "curves", "learning_rates", "tuning"):
            assert one[field] == two[field], (key, field)
        assert (one["config"]["runtime"]["workers"], two["config"]["runtime"]["workers"]) == (1, 2)


def test_a_recipe_that_does_not_start_from_scratch_is_not_run_again(tmp_path, mnist_dir, monkeypatch, capsys):
    # A run fine-tuned from a training checkpoint, not from an exported optimizer: its file
    # records one stage, which starts from that checkpoint.
    data = ["--data-dir", str(mnist_dir)]
    assert main(["meta-train", "--run-dir", str(tmp_path / "base"), *TINY_MNIST, *COMMON, *data]) == 0
    start = ["--init-from", str(tmp_path / "base" / "checkpoint.pt"), "--seed", "4"]
    assert main(["meta-train", "--run-dir", str(tmp_path / "final"), *TINY_MNIST, *start, *COMMON, *data]) == 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "final" / "checkpoint.pt"), "--run-dir",
                 str(tmp_path / "eval"), *TINY_EVAL, *COMMON, *data]) == 0
    assert main(["export", str(tmp_path / "final"), "--name", REPRODUCE_OPTIMIZER, "--evaluation", str(tmp_path / "eval"),
                 "--out", str(tmp_path / "pretrained"), "--purpose", "p", "--description", "d"]) == 0
    assert len(json.loads((tmp_path / "pretrained" / f"{REPRODUCE_OPTIMIZER}.json").read_text())["recipe"]) == 1
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path / "pretrained")
    capsys.readouterr()
    assert main(["reproduce", "mnist", "--meta-train", "--run-dir", str(tmp_path / "again"), *data, *COMMON]) == 2
    assert "not from scratch" in capsys.readouterr().err and not (tmp_path / "again").exists()
