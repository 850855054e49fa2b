"""The benchmark: its split, failure counting, ratios, the baselines that are not coordinatewise,
and `optimizer3 benchmark` end to end on --quick (resumed, refused, reported)."""

import json
import math

import numpy as np
import pytest
import torch

from optimizer3.cli import main
from optimizer3.evaluation import benchmark
from optimizer3.evaluation.benchmark import BenchmarkConfig, paired_ratio, run_failures, summarize_task
from optimizer3.evaluation.runs import run_baseline
from optimizer3.optim.baselines import make_baseline
from optimizer3.tasks import suite
from optimizer3.tasks.quadratic import QuadraticFamily

QUADRATICS = "quadratic-10,quadratic-2"


def test_the_held_out_set_has_data_architectures_and_activations_that_meta_training_never_sees():
    tasks = [task for task in suite.SUITE.values()]
    seen = {key: {getattr(t, key) for t in tasks if t.split == suite.META_TRAINING} for key in ("data", "family", "activation")}
    held = {key: {getattr(t, key) for t in tasks if t.split == suite.HELD_OUT} for key in ("data", "family", "activation")}
    for key in seen:
        assert held[key] - seen[key] - {None}, key
    # The shipped optimizers' meta-training tasks are in the meta-training set.
    for name in ("quadratic-10", "mnist-mlp-sigmoid", "mnist-mlp-relu"):
        assert suite.SUITE[name].split == suite.META_TRAINING
    # Every family has a long-horizon variant of 10 times its default horizon.
    for family in suite.FAMILIES:
        longs = [t for t in tasks if t.family == family and t.long]
        assert longs and all(t.steps >= 10 * suite.META_TRAINING_HORIZON for t in longs), family


def test_tasks_are_chosen_by_name_or_family_and_an_unknown_one_is_refused():
    assert suite.select("quadratic-2,CNN") == ("quadratic-2", "mnist-cnn", "fashion-cnn")
    assert "quadratic-10-long" in suite.select("quadratic", long=True)
    assert not any(name.endswith("-long") for name in suite.select(None))
    with pytest.raises(ValueError, match="Unknown benchmark task or family: 'resnet'"):
        suite.select("quadratic,resnet")


def test_failures_are_told_apart():
    initial = np.array([2.4, 2.4, 2.4, 2.4, 2.4])
    final = np.array([0.5, math.nan, 2.5, 2.31, math.inf])
    assert run_failures(initial, final, chance=math.log(10)) == [
        None, "non-finite", "above initial loss", "not below chance", "non-finite"]
    assert run_failures(initial[:1], np.array([2.305]), chance=None) == [None]


def _part(final, failed=None, lr=0.1, validation=None):
    final = list(final)
    part = {"final": final, "failed": failed or [None] * len(final), "lr": lr}
    if validation is not None:
        part["tuning"] = {"lrs": [lr], "scores": [validation]}
    return part


def test_a_failed_run_is_never_averaged_into_a_finite_mean():
    config = BenchmarkConfig(baselines=("sgd", "adam"), bootstrap=200)
    parts = {"learned": _part([1.0, 1.0, 5.0], [None, None, "above initial loss"]),
             "sgd": _part([2.0, 2.0, 2.5], validation=2.2), "adam": _part([1.0, 2.0, 3.0], validation=1.9)}
    summary = summarize_task(parts, ("learned",), config)
    learned = summary["optimizers"]["learned"]
    assert learned["failed"] == 1 and learned["failures"] == ["above initial loss"]
    assert math.isinf(learned["mean"]) and learned["median"] == 1.0
    assert summary["best_tuned"] == "adam"
    assert math.isinf(summary["ratios"]["learned"]["best_tuned"]["ratio"])


def test_the_best_tuned_baseline_is_chosen_on_validation_and_a_failed_one_gives_no_ratio():
    config = BenchmarkConfig(baselines=("sgd", "adam"), bootstrap=200)
    parts = {"learned": _part([1.0, 1.0]), "sgd": _part([0.5, 0.5], validation=2.0),
             "adam": _part([1.0, 9.0], [None, "non-finite"], validation=1.0)}
    summary = summarize_task(parts, ("learned",), config)
    # adam won on the validation problems; that it failed a test run is no win for the learned one.
    assert summary["best_tuned"] == "adam"
    assert summary["ratios"]["learned"]["best_tuned"]["ratio"] is None


def test_the_ratio_is_paired_over_the_same_problems():
    rng = np.random.default_rng(0)
    hard = rng.lognormal(size=64)
    ratio = paired_ratio(0.5 * hard, hard, 500, 0)
    # Same problems: the interval is the point itself, though the losses vary a lot.
    assert ratio["ratio"] == pytest.approx(0.5) and ratio["ci"] == pytest.approx([0.5, 0.5])
    noisy = paired_ratio(hard * rng.uniform(0.4, 0.6, size=64), hard, 500, 0)
    assert noisy["ci"][0] < noisy["ratio"] < noisy["ci"][1]


@pytest.mark.parametrize("name", ["muon", "prodigy"])
def test_an_optimizer_that_is_not_coordinatewise_runs_each_problem_on_its_own(name):
    pytest.importorskip("prodigyopt")
    from optimizer3.tasks.mlp import MLPFamily
    from optimizer3.tasks.images import ImageData

    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.rand(300, 16, generator=g), torch.randint(0, 10, (300,), generator=g),
                     torch.rand(50, 16, generator=g), torch.randint(0, 10, (50,), generator=g), None)
    task = MLPFamily(data, hidden=(6,), batch_size=8, heldout=100, split="heldout").sample(3, g)
    together = run_baseline(name, 0.01, task, 6, seed=4)
    # Problem 1 alone, with its own optimizer, from the same start and minibatches.
    generator = torch.Generator().manual_seed(4)
    start = task.init(generator)
    batches = [task.sample_batch(generator) for _ in range(7)]
    sizes = [math.prod(shape) for shape in task.parameter_shapes]
    tensors = [piece.reshape(shape).clone().requires_grad_()
               for piece, shape in zip(start[1].split(sizes), task.parameter_shapes)]
    optimizer = make_baseline(name, tensors, 0.01)
    for t in range(7):
        flat = torch.cat([t_.reshape(-1) for t_ in tensors]).unsqueeze(0)
        loss = task.rows(1, 2).loss(flat, batches[t][1:2])
        if t == 6:
            break
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    assert together.losses[-1, 1].item() == pytest.approx(loss.item(), rel=1e-5)


def test_schedule_free_is_measured_at_its_averaged_point():
    pytest.importorskip("schedulefree")
    task = QuadraticFamily(dim=5).sample(8, torch.Generator().manual_seed(0))
    run = run_baseline("schedule-free", 0.05, task, 30, seed=0)
    # The final loss is the loss of the parameters returned, the averaged point.
    assert torch.allclose(run.losses[-1], task.loss(run.params.to(torch.float32)).cpu(), rtol=1e-5)


def _benchmark(tmp_path, *extra, tasks=QUADRATICS):
    return main(["benchmark", "--pretrained", "quadratic", "--tasks", tasks, "--quick", "--quiet", "--workers", "1",
                 "--run-dir", str(tmp_path / "bench"), *extra])


def test_the_command_writes_a_report_that_shows_the_split_and_the_failures(tmp_path, capsys):
    assert _benchmark(tmp_path) == 0
    printed = capsys.readouterr().out
    assert "**quadratic**, held-out set (1 tasks)" in printed
    run = tmp_path / "bench"
    results = json.loads((run / "results.json").read_text())
    assert set(results["tasks"]) == {"quadratic-10", "quadratic-2"}
    assert set(results["tasks"]["quadratic-2"]["optimizers"]) == {"quadratic", *BenchmarkConfig().baselines}
    text = (run / "results.md").read_text()
    assert "held-out set: quadratic-2" in text and "| failed |" in text
    assert (run / "benchmark.png").stat().st_size > 10_000


def test_an_interrupted_benchmark_resumes_with_the_parts_it_has(tmp_path, monkeypatch):
    calls, interrupt_at = [], [5]
    real = benchmark.run_part

    def counting(task, optimizer, *args):
        calls.append((task.name, optimizer))
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt
        return real(task, optimizer, *args)

    monkeypatch.setattr("optimizer3.experiments.benchmark.run_part", counting)
    assert _benchmark(tmp_path) == 130
    assert len(list((tmp_path / "bench" / "parts").rglob("*.json"))) == 4
    calls.clear()
    interrupt_at[0] = None
    assert _benchmark(tmp_path) == 0
    assert len(calls) == 2 * 10 - 4  # only the missing parts
    calls.clear()
    assert _benchmark(tmp_path, "--pretrained", "mnist") == 0  # a second optimizer reuses the baselines
    assert sorted(calls) == [("quadratic-10", "mnist"), ("quadratic-2", "mnist")]


def test_workers_compute_the_same_parts(tmp_path):
    assert _benchmark(tmp_path, tasks="quadratic-2") == 0
    assert main(["benchmark", "--pretrained", "quadratic", "--tasks", "quadratic-2", "--quick", "--quiet",
                 "--workers", "2", "--run-dir", str(tmp_path / "two")]) == 0
    one, two = (json.loads((tmp_path / d / "results.json").read_text())["tasks"] for d in ("bench", "two"))
    for task in (one, two):
        for name in task["quadratic-2"]["optimizers"]:
            task["quadratic-2"]["optimizers"][name].pop("seconds", None)
    assert one == two


def test_parts_computed_with_other_settings_are_refused_not_mixed(tmp_path, capsys):
    assert _benchmark(tmp_path, tasks="quadratic-2") == 0
    before = {path: path.read_bytes() for path in (tmp_path / "bench").rglob("*") if path.is_file()}
    assert _benchmark(tmp_path, "--test-seed", "7", tasks="quadratic-2") == 2
    assert "computed with other settings" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in (tmp_path / "bench").rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "resnet"], "Unknown benchmark task or family: 'resnet'"),
    (["--pretrained", "nope"], "No pretrained optimizer named 'nope'"),
    (["--baselines", "adagrad"], "Unknown baseline optimizer: 'adagrad'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    assert main(["benchmark", "--quick", "--run-dir", str(tmp_path / "bench"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bench").exists()


def test_a_file_that_is_not_a_learned_optimizer_is_refused(tmp_path, capsys):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    assert main(["benchmark", "--quick", "--checkpoint", str(bogus), "--run-dir", str(tmp_path / "bench")]) == 2
    assert "bogus.pt" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_missing_data_is_one_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPTIMIZER3_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    import dataclasses

    from optimizer3.tasks import images

    monkeypatch.setitem(images.DATASETS, "fashion-mnist", dataclasses.replace(
        images.FASHION_MNIST, system_dirs=(), mirrors=("http://127.0.0.1:9/",)))
    code = main(["benchmark", "--quick", "--tasks", "fashion-cnn", "--run-dir", str(tmp_path / "bench"),
                 "--data-dir", str(tmp_path / "nothing")])
    assert code == 2
    assert "Fashion-MNIST" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()


def test_the_whole_suite_runs_on_quick(tmp_path, mnist_dir, fashion_dir):
    code = main(["benchmark", "--pretrained", "mnist", "--quick", "--quiet", "--workers", "1", "--run-dir",
                 str(tmp_path / "bench"), "--data-dir", str(mnist_dir.parent)])
    assert code == 0
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert set(results["tasks"]) == set(suite.default_tasks())
    for name, task in results["tasks"].items():
        entry = task["optimizers"]["mnist"]
        assert entry["problems"] == 4, name
        if task["spec"]["family"] != "quadratic":
            assert "test_metric" in entry, name
