import dataclasses
import pathlib
import pickle

import pytest
import torch

from optimizer3.configs import to_dict
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.errors import CheckpointError, UsageError
from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.meta.checkpoint import FORMAT_VERSION, load_checkpoint
from optimizer3.meta.run_state import start_average, update_average
from optimizer3.meta.trainer import loss_weights, meta_train, scheduled_lr, validate
from optimizer3.meta.truncated_bptt import meta_gradient
from optimizer3.meta.unroll import start
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig, make_task_family

TINY = MetaTrainConfig(
    task=TaskConfig(dim=5), horizon=20, unroll=5, problems=32, trajectories=16,
    validation_problems=64, validate_every=8,
)


def test_meta_training_lowers_the_validation_loss(tmp_path):
    result = meta_train(TINY, run_dir=tmp_path, progress=False)
    initial = result.history[0]["validation_loss"]
    assert result.best_validation < 0.5 * initial
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == TINY.trajectories


def test_a_short_mnist_meta_training_lowers_the_meta_loss_and_the_validation_loss(mnist_dir):
    # Real MNIST, a small MLP and a few trajectories: the paper's log/sign inputs, the output
    # layer at zero (so the first updates are zero and the optimizee starts where it was drawn).
    config = MetaTrainConfig(
        task=TaskConfig(name="mnist", hidden=(8,), batch_size=32),
        optimizer=LSTMOptimizerConfig(preprocessing="log_sign", output_init="zeros"),
        horizon=20, unroll=5, problems=4, trajectories=12, meta_lr=0.01,
        validation_problems=8, validate_every=4,
    )
    result = meta_train(config, progress=False, data_dir=str(mnist_dir))
    losses = [record["meta_loss"] for record in result.history if "meta_loss" in record]
    assert len(losses) == 12
    assert sum(losses[-3:]) < 0.9 * sum(losses[:3])
    assert result.best_validation < 0.9 * result.history[0]["validation_loss"]


def test_meta_training_is_bit_for_bit_deterministic_per_seed():
    config = dataclasses.replace(TINY, trajectories=4)
    a = meta_train(config, progress=False).meta_params
    b = meta_train(config, progress=False).meta_params
    c = meta_train(dataclasses.replace(config, seed=5), progress=False).meta_params
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_second_order_final_weighting_and_log_loss_run():
    config = dataclasses.replace(TINY, trajectories=2, second_order=True, loss_weights="final",
                                 meta_objective="log_loss")
    result = meta_train(config, progress=False)
    assert all(torch.isfinite(v).all() for v in result.meta_params.values())
    # Each setting changes the meta-gradient: the same run without it ends elsewhere.
    for change in ({"second_order": False}, {"loss_weights": "linear"}, {"meta_objective": "loss"}):
        other = meta_train(dataclasses.replace(config, **change), progress=False).meta_params
        assert not all(torch.equal(other[k], result.meta_params[k]) for k in other), change


def test_truncations_without_weight_build_no_graph(monkeypatch):
    from optimizer3.meta import trainer

    calls = []
    original = trainer.meta_gradient
    monkeypatch.setattr(trainer, "meta_gradient", lambda *args: calls.append(args[-1]) or original(*args))
    config = dataclasses.replace(TINY, trajectories=2, loss_weights="final", validate_every=2)
    result = meta_train(config, progress=False)
    # One meta-gradient per trajectory, of the last truncation, the only one whose loss counts.
    assert [window.tolist() for window in calls] == [[0, 0, 0, 0, 1]] * 2
    assert result.history[-1]["meta_loss"] > 0


def test_loss_weights():
    assert loss_weights("uniform", 4).tolist() == [1, 1, 1, 1]
    assert loss_weights("linear", 4).tolist() == [0.25, 0.5, 0.75, 1.0]
    assert loss_weights("final", 4).tolist() == [0, 0, 0, 1]


def test_a_run_cut_from_a_longer_schedule_follows_its_first_part():
    whole = MetaTrainConfig(meta_lr=0.01, trajectories=200)
    cut = dataclasses.replace(whole, trajectories=80, schedule_trajectories=200)
    assert [scheduled_lr(cut, t) for t in range(80)] == [scheduled_lr(whole, t) for t in range(80)]
    assert scheduled_lr(cut, 79) > 0.005  # past the middle of its own length, not of the schedule's
    assert scheduled_lr(dataclasses.replace(whole, trajectories=80), 79) < 0.0001


def test_the_moving_average_of_the_meta_parameters_is_what_validation_measures_and_keeps(tmp_path):
    config = dataclasses.replace(TINY, trajectories=4, validate_every=4, average_decay=0.7)
    result = meta_train(config, run_dir=tmp_path, progress=False)
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    average, current = checkpoint["average_params"], checkpoint["meta_params"]
    assert not all(torch.equal(average[k], current[k]) for k in average)
    validation_task = make_task_family(config.task, "heldout").sample(
        config.validation_problems, torch.Generator().manual_seed(config.validation_seed))
    assert result.history[-1]["validation_loss"] == pytest.approx(validate(average, config, validation_task), rel=1e-6)
    assert validate(current, config, validation_task) != pytest.approx(result.history[-1]["validation_loss"], rel=1e-6)
    # The kept best is the average of the checkpoint that validated best.
    best = min(record["validation_loss"] for record in result.history if "validation_loss" in record)
    assert result.best_validation == best
    if result.best_validation == result.history[-1]["validation_loss"]:
        assert all(torch.equal(result.best_meta_params[k], average[k]) for k in average)
    else:
        assert validate(result.best_meta_params, config, validation_task) == pytest.approx(best, rel=1e-6)


def test_the_moving_average_follows_every_meta_step():
    start = {"w": torch.tensor([0.0, 4.0])}
    average = start_average(start, dataclasses.replace(TINY, average_decay=0.75))
    for value in (8.0, 16.0):
        update_average(average, {"w": torch.tensor([value, value])}, 0.75)
    # 0.75 * (0.75 * a0 + 0.25 * 8) + 0.25 * 16
    assert average["w"].tolist() == [0.75 * 0.25 * 8 + 0.25 * 16, 0.75 * 0.75 * 4 + 0.75 * 0.25 * 8 + 0.25 * 16]
    assert start["w"].tolist() == [0.0, 4.0]  # a copy: the start itself is left alone
    assert start_average(start, TINY) is None


@pytest.mark.parametrize(
    "changes,match",
    [({"horizon": 100, "unroll": 30}, "does not divide"), ({"horizon": 0}, "horizon: 0"),
     ({"trajectories": -1}, "trajectories: -1"), ({"meta_lr": 0.0}, "meta learning rate"),
     ({"validation_seed": 0}, "seeds are both 0"), ({"loss_weights": "cubic"}, "'cubic'"),
     ({"meta_objective": "sqrt"}, "'sqrt'"),
     ({"trajectories": 100, "schedule_trajectories": 60}, "schedule_trajectories: 60 is fewer"),
     ({"schedule_trajectories": -1}, "schedule_trajectories: -1"),
     ({"average_decay": 1.0}, "average_decay: 1.0"), ({"average_decay": -0.1}, "average_decay: -0.1"),
     ({"lr_schedule": "constant", "schedule_trajectories": 400}, "'constant'"),
     ({"task": TaskConfig(name="mnist", activation="sigmoid,relu"), "problems": 3}, "problems: 3 is not a multiple of 2"),
     ({"task": TaskConfig(name="mnist", activation="tanh,relu,relu"), "problems": 6}, "validation_problems: 500 is not a multiple of 3"),
     ({"task": TaskConfig(name="mnist", mix_hidden=("20,20", "40")), "problems": 4},
      "problems: 4 is not a multiple of 3, the architectures of --hidden and --mix-hidden 20,20 40")],
)
def test_bad_settings_are_refused(changes, match):
    with pytest.raises(UsageError, match=match):
        dataclasses.replace(MetaTrainConfig(), **changes)


@pytest.mark.parametrize("changes,match", [
    ({"recompute_every": -2}, "recompute_every: -2"), ({"matmul_dtype": "float16"}, "'float16'"),
    ({"workers": 0}, "workers: 0"), ({"threads": -1}, "threads: -1"), ({"device": "tpu"}, "'tpu'"),
])
def test_bad_runtime_settings_are_refused(changes, match):
    with pytest.raises(UsageError, match=match):
        RuntimeConfig(**changes)


@pytest.mark.parametrize("momentum_inputs,second_order", [((), False), ((0.5, 0.9), False), ((0.5, 0.9), True)])
def test_recomputed_segments_give_the_whole_truncations_meta_gradient(momentum_inputs, second_order):
    optimizer = LSTMOptimizerConfig(momentum_inputs=momentum_inputs)
    outcomes = []
    for recompute_every in (0, 7, 20):  # 0 and 20 (the whole unroll): one graph; 7: segments of 7, 7, 6
        config = dataclasses.replace(TINY, optimizer=optimizer, unroll=20, second_order=second_order)
        runtime = RuntimeConfig(recompute_every=recompute_every)
        generator = torch.Generator().manual_seed(0)
        meta_params = {k: v.requires_grad_() for k, v in init_meta_params(optimizer, generator).items()}
        task = make_task_family(config.task, "train").sample(8, generator)
        carry, _ = start(task, optimizer, generator)
        loss, end = meta_gradient(meta_params, config, runtime, task, carry, generator, loss_weights("linear", 20))
        outcomes.append((loss, {k: v.grad for k, v in meta_params.items()}, end, generator.get_state()))
    (loss, grads, end, rng), segmented = outcomes[0], outcomes[1]
    assert outcomes[2][0] == loss and torch.equal(outcomes[2][1]["output.weight"], grads["output.weight"])
    assert segmented[0] == pytest.approx(loss, rel=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(segmented[1][name], grad, rtol=1e-5, atol=1e-7)
    assert grads["output.weight"].abs().sum() > 0
    # The same end of the truncation, and the same random draws after it.
    assert torch.equal(segmented[2].params, end.params) and torch.equal(segmented[2].state.h[1], end.state.h[1])
    assert not segmented[2].params.requires_grad and torch.equal(segmented[3], rng)


def test_bfloat16_products_give_nearly_the_float32_meta_gradient():
    outcomes = []
    for matmul_dtype in ("float32", "bfloat16"):
        config = dataclasses.replace(TINY, unroll=20)
        generator = torch.Generator().manual_seed(0)
        meta_params = {k: v.requires_grad_() for k, v in init_meta_params(config.optimizer, generator).items()}
        task = make_task_family(config.task, "train").sample(8, generator)
        carry, _ = start(task, config.optimizer, generator)
        loss, end = meta_gradient(meta_params, config, RuntimeConfig(matmul_dtype=matmul_dtype), task, carry,
                                  generator, loss_weights("linear", 20))
        grads = torch.cat([v.grad.flatten() for v in meta_params.values()])
        outcomes.append((loss, grads, end))
    (loss, grads, end), (low_loss, low_grads, low_end) = outcomes
    assert not torch.equal(low_grads, grads)  # the products did run in bfloat16 ...
    assert low_loss == pytest.approx(loss, rel=1e-2)  # ... and changed little
    assert torch.nn.functional.cosine_similarity(low_grads, grads, dim=0) > 0.99
    assert low_end.params.dtype == low_end.state.h[0].dtype == torch.float32
    torch.testing.assert_close(low_end.params, end.params, rtol=0.05, atol=1e-3)


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    meta_train(dataclasses.replace(TINY, trajectories=2, validate_every=1), run_dir=run_dir, progress=False)
    return run_dir / "checkpoint.pt"


def test_checkpoint_is_a_plain_dict_loadable_without_pickle(checkpoint_path):
    raw = torch.load(checkpoint_path, weights_only=True)
    assert raw["version"] == FORMAT_VERSION and raw["trajectory"] == 2
    assert raw["config"] == to_dict(dataclasses.replace(TINY, trajectories=2, validate_every=1))
    loaded = load_checkpoint(checkpoint_path)
    assert isinstance(loaded["config"], MetaTrainConfig)


def test_an_averaging_runs_checkpoint_without_its_average_is_refused(tmp_path, checkpoint_path):
    raw = torch.load(checkpoint_path, weights_only=True)
    assert raw["average_params"] == {}  # no averaging, nothing kept
    raw["config"]["average_decay"] = 0.9
    torch.save(raw, tmp_path / "averaged.pt")
    with pytest.raises(CheckpointError, match=r"average_params\) do not match"):
        load_checkpoint(tmp_path / "averaged.pt")


def test_missing_and_corrupt_checkpoints_are_refused(tmp_path, checkpoint_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint_path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="Cannot read checkpoint") as error:
        load_checkpoint(corrupt)
    assert "corrupt" in str(error.value) and "weights_only" not in str(error.value)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(listed)


class _Payload:
    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(_Payload.marker),))


def test_a_pickled_object_is_refused_and_never_runs(tmp_path):
    _Payload.marker = str(tmp_path / "executed")
    evil = tmp_path / "evil.pt"
    with evil.open("wb") as file:
        pickle.dump({"version": FORMAT_VERSION, "payload": _Payload()}, file)
    with pytest.raises(CheckpointError, match="not a plain-dict") as error:
        load_checkpoint(evil)
    assert not (tmp_path / "executed").exists()
    assert "weights_only" not in str(error.value)  # torch's advice to load it unsafely is not passed on
    saved = tmp_path / "saved.pt"
    torch.save({"version": FORMAT_VERSION, "payload": _Payload()}, saved)
    with pytest.raises(CheckpointError, match="holds a Python object, getattr, and objects are never unpickled"):
        load_checkpoint(saved)
    assert not (tmp_path / "executed").exists()
    # The payload is real: plain unpickling would have run it.
    pickle.loads(evil.read_bytes())
    assert (tmp_path / "executed").exists()


def test_other_architecture_and_version_are_refused(tmp_path, checkpoint_path):
    raw = torch.load(checkpoint_path, weights_only=True)
    other = dict(raw, config=dict(raw["config"], optimizer=to_dict(LSTMOptimizerConfig(hidden_size=7))))
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="another architecture|do not match"):
        load_checkpoint(tmp_path / "other.pt")
    # A version 1 checkpoint, whose config also held how the run computed, is read as this one.
    old = dict(raw, version=1, config=dict(raw["config"], compile=False, device="cpu", workers=1,
                                            matmul_dtype="float32", recompute_every=0))
    torch.save(old, tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt")["config"] == load_checkpoint(checkpoint_path)["config"]
    torch.save(dict(raw, version=99), tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "v99.pt")
    torch.save(dict(raw, config=dict(raw["config"], horizon="long")), tmp_path / "typed.pt")
    with pytest.raises(CheckpointError, match="horizon"):
        load_checkpoint(tmp_path / "typed.pt")


def test_a_run_can_start_from_another_runs_optimizer(tmp_path):
    first = meta_train(dataclasses.replace(TINY, trajectories=4), run_dir=tmp_path, progress=False)
    config = dataclasses.replace(TINY, trajectories=2, init_from=str(tmp_path / "checkpoint.pt"))
    result = meta_train(config, progress=False)
    # It starts where the first run's best meta-parameters are (same validation problems).
    assert result.history[0]["validation_loss"] == first.best_validation
    random_start = meta_train(dataclasses.replace(TINY, trajectories=2), progress=False)
    assert random_start.history[0]["validation_loss"] != first.best_validation
    # How the first run's output layer was initialised does not matter to the second: a warm
    # start's output bias is an initialization, not part of the architecture.
    warm = dataclasses.replace(config, optimizer=dataclasses.replace(TINY.optimizer, output_bias=(-0.05,)))
    assert meta_train(warm, progress=False).history[0]["validation_loss"] == first.best_validation


def test_a_start_of_another_architecture_or_unknown_source_is_refused(tmp_path):
    meta_train(dataclasses.replace(TINY, trajectories=1), run_dir=tmp_path, progress=False)
    wider = dataclasses.replace(TINY, optimizer=LSTMOptimizerConfig(hidden_size=8),
                                init_from=str(tmp_path / "checkpoint.pt"))
    with pytest.raises(UsageError, match="architecture"):
        meta_train(wider, progress=False)
    other_form = dataclasses.replace(
        TINY, optimizer=dataclasses.replace(TINY.optimizer, update_form="direction_magnitude"),
        init_from=str(tmp_path / "checkpoint.pt"))
    with pytest.raises(UsageError, match="--update-form"):
        meta_train(other_form, progress=False)
    with pytest.raises(UsageError, match="neither a file nor a shipped pretrained name"):
        meta_train(dataclasses.replace(TINY, init_from=str(tmp_path / "missing.pt")), progress=False)
