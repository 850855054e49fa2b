"""`LearnedOptimizer`: what is its own beyond the contract every optimizer passes
(test_optimizer_contract.py): the same trajectories as the meta-trainer, its state, files."""

import copy
import dataclasses
import pickle

import pytest
import torch

from optimizer3.errors import CheckpointError, UsageError
from optimizer3.configs import to_dict
from optimizer3.learned.files import make_optimizer_file
from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params, init_state
from optimizer3.learned.lstm_fast import lstm_step
from optimizer3.meta.checkpoint import make_checkpoint
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.unroll import start, unroll
from optimizer3.optim import learned as learned_module
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks.mlp import MLPFamily
from optimizer3.tasks.quadratic import QuadraticFamily
from optimizer3.evaluation.runs import run_learned
from test_mlp import _fake_mnist

CONFIG = LSTMOptimizerConfig(preprocessing="log_sign")
MOMENTUM = LSTMOptimizerConfig(preprocessing="log_sign", momentum_inputs=(0.5, 0.9, 0.99))
CORRECTED = LSTMOptimizerConfig(preprocessing="log_sign", momentum_inputs=(0.5, 0.99), momentum_bias_correction=True)


def _meta(config=CONFIG, seed=0, dtype=torch.float32):
    return init_meta_params(config, torch.Generator().manual_seed(seed), dtype=dtype)


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(dtype)


def _train(model, optimizer, steps, first=0):
    """Train on minibatches first .. first + steps - 1 of a fixed sequence; return the losses."""
    g = torch.Generator().manual_seed(0)
    inputs, targets = torch.randn(20, 8, 5, generator=g), torch.randn(20, 8, 1, generator=g)
    device = next(model.parameters()).device
    losses = []
    for t in range(first, first + steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs[t].to(device)), targets[t].to(device))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family,dtype,tolerance,config", [
    (QuadraticFamily(dim=6), torch.float64, {}, CONFIG),
    (QuadraticFamily(dim=6), torch.float64, {}, LSTMOptimizerConfig(preprocessing="log_sign",
                                                                    update_form="direction_magnitude")),
    (QuadraticFamily(dim=6), torch.float64, {}, MOMENTUM),
    (QuadraticFamily(dim=6), torch.float64, {}, dataclasses.replace(MOMENTUM, update_form="gradient_mix",
                                                                    mix_scale=0.5)),
    (QuadraticFamily(dim=6), torch.float64, {}, dataclasses.replace(MOMENTUM, update_form="gradient_mix",
                                                                    mix_scale=0.05, mix_rms_decay=0.99)),
    (MLPFamily(_fake_mnist(), hidden=(7,), activation="sigmoid", batch_size=16, heldout=100), torch.float32,
     {"rtol": 1e-4, "atol": 1e-5}, CONFIG),
])
def test_same_trajectory_as_the_meta_trainers_unroll(family, dtype, tolerance, config):
    task = family.sample(3, torch.Generator().manual_seed(1))
    meta = _meta(config, dtype=dtype)
    if dtype == torch.float64:
        task = family.sample(3, torch.Generator().manual_seed(1), dtype=dtype)
    generator = torch.Generator().manual_seed(5)
    carry, initial = start(task, config, generator)
    with torch.no_grad():
        _, carry, losses = unroll(meta, config, task, carry, 30, generator)
    through_optimizer = run_learned((meta, config), task, 30, seed=5)
    torch.testing.assert_close(through_optimizer.losses, torch.cat((initial[None], losses)), **tolerance)
    torch.testing.assert_close(through_optimizer.params, carry.params, **tolerance)
    assert not torch.equal(losses[-1], initial)  # the optimizer moved


@pytest.mark.parametrize("config", [CONFIG, MOMENTUM, CORRECTED])
def test_blocks_of_rows_give_the_same_update_as_one_call(monkeypatch, config):
    monkeypatch.setattr(learned_module, "CHUNK_ROWS", 7)  # 50 rows: 7 full blocks and a part
    meta = _meta(config, dtype=torch.float64)
    param = torch.zeros(5, 10, dtype=torch.float64, requires_grad=True)
    optimizer = LearnedOptimizer([param], meta, config)
    state = init_state(config, 50, dtype=torch.float64)
    expected = torch.zeros(50, dtype=torch.float64)
    for step in range(3):
        grads = torch.randn(5, 10, dtype=torch.float64)
        param.grad = grads.clone()
        optimizer.step()
        updates, state = lstm_step(meta, grads.reshape(-1), state, config)
        expected += updates
        torch.testing.assert_close(param.detach().reshape(-1), expected, rtol=1e-12, atol=1e-15)
    # The optimizer keeps its state laid out as LSTMState: one column per coordinate.
    torch.testing.assert_close(optimizer.state[param]["h"][1], state.h[1], rtol=1e-12, atol=1e-15)
    if config.momentum_inputs:
        torch.testing.assert_close(optimizer.state[param]["momentum"], state.momentum, rtol=1e-12, atol=1e-15)
    else:
        assert "momentum" not in optimizer.state[param]
    assert optimizer.state[param]["step"] == 3


def test_state_is_created_lazily_with_the_documented_shapes():
    weight = torch.nn.Parameter(torch.randn(4, 6))
    optimizer = LearnedOptimizer([weight], _meta(), CONFIG)
    assert len(optimizer.state) == 0
    weight.grad = torch.randn(4, 6)
    optimizer.step()
    state = optimizer.state[weight]
    assert state["h"].shape == state["c"].shape == (CONFIG.layers, CONFIG.hidden_size, 24)


def test_parameter_groups_with_their_own_lr_and_a_scheduler():
    meta = _meta(seed=3)
    a, b, c = (torch.nn.Parameter(torch.zeros(4)) for _ in range(3))
    optimizer = LearnedOptimizer([{"params": [a]}, {"params": [b], "lr": 2.0}], meta, CONFIG)
    optimizer.add_param_group({"params": [c], "lr": 0.0})
    assert [g["lr"] for g in optimizer.param_groups] == [1.0, 2.0, 0.0]
    grads = torch.tensor([1e-3, -2e-2, 0.5, -4.0])
    for p in (a, b, c):
        p.grad = grads.clone()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    optimizer.step()
    expected, _ = lstm_step(meta, grads, init_state(CONFIG, 4), CONFIG)
    torch.testing.assert_close(a.detach(), expected)
    torch.testing.assert_close(b.detach(), 2 * expected)
    assert torch.equal(c.detach(), torch.zeros(4))
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, 1.0, 0.0]


def test_maximize_follows_the_negated_gradient():
    meta = _meta(seed=4)
    up, down = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(5))
    grads = torch.randn(5)
    up.grad, down.grad = grads.clone(), -grads
    LearnedOptimizer([up], meta, CONFIG, maximize=True).step()
    LearnedOptimizer([down], meta, CONFIG).step()
    torch.testing.assert_close(up.detach(), down.detach())


@pytest.mark.parametrize("config", [CONFIG, MOMENTUM])
def test_state_dict_round_trip_resumes_exactly(config):
    from test_optimizer_contract import saved_and_loaded

    meta = _meta(config, seed=1)
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), meta, config)
    uninterrupted = _train(model, optimizer, 10)

    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), meta, config)
    first = _train(model, optimizer, 10)[:5]
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), meta, config)
    _train(model, optimizer, 5)
    saved = saved_and_loaded(model, optimizer)

    resumed_model = _model(seed=99)
    resumed_model.load_state_dict(saved["model"])
    other_meta = _meta(config, seed=2)  # the state dict carries the meta-parameters too
    resumed = LearnedOptimizer(resumed_model.parameters(), other_meta, config)
    resumed.load_state_dict(saved["optimizer"])
    rest = _train(resumed_model, resumed, 5, first=5)
    assert first + rest == uninterrupted
    # The state keeps LSTMState's feature-major layout through saving and loading.
    state = resumed.state[next(resumed_model.parameters())]
    assert all(state[key].is_contiguous() for key in ("h", "c", "momentum") if key in state)
    if config.momentum_inputs:
        broken = copy.deepcopy(saved["optimizer"])
        broken["state"][0]["momentum"] = broken["state"][0]["momentum"][:, :2]
        with pytest.raises(ValueError, match=r"state momentum for parameter 0 has shape \(3, 2\)"):
            LearnedOptimizer(_model().parameters(), meta, config).load_state_dict(broken)
        plain = LearnedOptimizer(_model().parameters(), _meta(), CONFIG)
        with pytest.raises(ValueError, match="architecture"):
            plain.load_state_dict(saved["optimizer"])


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda obj: pickle.loads(pickle.dumps(obj))],
                         ids=["deepcopy", "pickle"])
def test_a_copied_or_unpickled_optimizer_continues_as_the_original(duplicate):
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _meta(MOMENTUM, seed=1), MOMENTUM, lr=0.5)
    _train(model, optimizer, 5)
    twin = duplicate({"model": model, "optimizer": optimizer})
    assert twin["optimizer"].param_groups[0]["params"] == list(twin["model"].parameters())
    assert _train(twin["model"], twin["optimizer"], 5, first=5) == _train(model, optimizer, 5, first=5)
    assert twin["optimizer"].state_dict()["learned"]["optimizer"] == optimizer.state_dict()["learned"]["optimizer"]


def test_load_state_dict_refuses_what_does_not_fit():
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _meta(), CONFIG)
    _train(model, optimizer, 1)
    state = optimizer.state_dict()

    wider = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    with pytest.raises(ValueError, match="parameters of shapes"):
        LearnedOptimizer(wider.parameters(), _meta(), CONFIG).load_state_dict(state)
    transposed = torch.nn.Parameter(torch.zeros(3, 2))
    flat_state = LearnedOptimizer([torch.nn.Parameter(torch.zeros(2, 3))], _meta(), CONFIG).state_dict()
    with pytest.raises(ValueError, match="parameters of shapes"):  # same numel, other shape
        LearnedOptimizer([transposed], _meta(), CONFIG).load_state_dict(flat_state)
    other = LSTMOptimizerConfig(preprocessing="log_sign", hidden_size=8)
    with pytest.raises(ValueError, match="architecture"):
        LearnedOptimizer(_model().parameters(), _meta(other), other).load_state_dict(state)
    adam = torch.optim.Adam(_model().parameters())
    with pytest.raises(ValueError, match="no 'learned' entry"):
        LearnedOptimizer(_model().parameters(), _meta(), CONFIG).load_state_dict(adam.state_dict())
    fewer = LearnedOptimizer(list(_model().parameters())[:2], _meta(), CONFIG)
    with pytest.raises(ValueError, match="parameters of shapes"):
        fewer.load_state_dict(state)
    broken = copy.deepcopy(state)
    del broken["state"][0]["step"]
    with pytest.raises(ValueError, match="not LearnedOptimizer state"):
        LearnedOptimizer(_model().parameters(), _meta(), CONFIG).load_state_dict(broken)

    # A refused load leaves the optimizer as it was.
    trained_wider = LearnedOptimizer(wider.parameters(), _meta(seed=9), CONFIG)
    _train(wider, trained_wider, 2)
    before = copy.deepcopy(trained_wider.state_dict())
    with pytest.raises(ValueError, match="parameters of shapes"):
        trained_wider.load_state_dict(state)
    after = trained_wider.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for key in before["state"]:
        assert all(torch.equal(before["state"][key][k], after["state"][key][k]) for k in ("h", "c"))
    assert all(torch.equal(before["learned"]["meta_params"][k], after["learned"]["meta_params"][k])
               for k in before["learned"]["meta_params"])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_dtypes_keep_float32_state_below_float64(dtype):
    meta = _meta(seed=5)
    reference = torch.nn.Parameter(torch.zeros(6))
    param = torch.nn.Parameter(torch.zeros(6, dtype=dtype))
    grads = torch.tensor([1e-4, -1e-3, 1e-2, -0.1, 1.0, -3.0])
    reference.grad, param.grad = grads.clone(), grads.to(dtype)
    LearnedOptimizer([reference], meta, CONFIG).step()
    optimizer = LearnedOptimizer([param], meta, CONFIG)
    optimizer.step()
    expected_state = torch.float64 if dtype == torch.float64 else torch.float32
    assert optimizer.state[param]["h"].dtype == expected_state
    assert param.dtype == dtype
    tolerance = {"rtol": 1e-2, "atol": 1e-3} if dtype != torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(param.detach().float(), reference.detach(), **tolerance)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("config", [CONFIG, MOMENTUM])
def test_cuda_matches_cpu(config):
    meta = _meta(config, seed=6)
    cpu_model, gpu_model = _model(), _model().cuda()
    cpu_losses = _train(cpu_model, LearnedOptimizer(cpu_model.parameters(), meta, config), 5)
    gpu_optimizer = LearnedOptimizer(gpu_model.parameters(), meta, config)
    gpu_losses = _train(gpu_model, gpu_optimizer, 5)
    assert gpu_optimizer.state[next(gpu_model.parameters())]["h"].is_cuda
    torch.testing.assert_close(torch.tensor(gpu_losses), torch.tensor(cpu_losses), rtol=1e-4, atol=1e-5)


def test_bad_construction_is_refused():
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        LearnedOptimizer([torch.nn.Parameter(torch.zeros(2))], _meta(), CONFIG, lr=-1.0)
    with pytest.raises(ValueError, match="torch.int64"):
        LearnedOptimizer([torch.zeros(2, dtype=torch.long)], _meta(), CONFIG)
    other = LSTMOptimizerConfig(preprocessing="log_sign", layers=1)
    with pytest.raises(ValueError, match="another architecture|do not match"):
        LearnedOptimizer([torch.nn.Parameter(torch.zeros(2))], _meta(), other)


def test_sparse_gradients_are_refused():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = LearnedOptimizer(embedding.parameters(), _meta(), CONFIG)
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        optimizer.step()


def test_from_file_reads_optimizer_files_and_checkpoints_and_refuses_pickles(tmp_path):
    meta = _meta(seed=7)
    path = tmp_path / "opt.pt"
    torch.save(make_optimizer_file(CONFIG, meta, to_dict(MetaTrainConfig(optimizer=CONFIG))), path)
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = LearnedOptimizer.from_file(path, [param])
    assert optimizer.config == CONFIG
    assert all(torch.equal(optimizer.meta_params[k], meta[k]) for k in meta)
    best, last = _meta(seed=8), _meta(seed=9)
    checkpoint = make_checkpoint(MetaTrainConfig(optimizer=CONFIG), last, best, {}, 3, 0.5, torch.zeros(4))
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    from_checkpoint = LearnedOptimizer.from_file(tmp_path / "checkpoint.pt", [param])
    assert all(torch.equal(from_checkpoint.meta_params[k], best[k]) for k in best)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"kind": Evil()}, protocol=2))
    with pytest.raises(CheckpointError, match="not a plain-dict"):
        LearnedOptimizer.from_file(evil, [param])
    bad_version = make_optimizer_file(CONFIG, meta, None) | {"version": 99}
    torch.save(bad_version, tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="format version 99"):
        LearnedOptimizer.from_file(tmp_path / "v99.pt", [param])


def test_unknown_pretrained_name_lists_the_available_ones():
    with pytest.raises(UsageError, match="No pretrained optimizer named 'nope'; available: "):
        LearnedOptimizer.from_pretrained("nope", [torch.nn.Parameter(torch.zeros(2))])


def test_groups_given_as_generators_keep_their_parameters():
    model = _model()
    optimizer = LearnedOptimizer([{"params": model[0].parameters(), "lr": 0.5}], _meta(), CONFIG)
    optimizer.add_param_group({"params": model[2].parameters()})
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 2]
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, optimizer, 1)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("momentum_inputs", [(), (0.3, 0.7)])
def test_a_first_call_under_inference_mode_does_not_break_meta_gradients(momentum_inputs):
    from optimizer3.learned import features

    features._CONSTANTS.clear()  # the cached constants are made under inference_mode below
    config = LSTMOptimizerConfig(hidden_size=3, momentum_inputs=momentum_inputs)
    meta = _meta(config)
    with torch.inference_mode():
        lstm_step(meta, torch.randn(4), init_state(config, 4), config)
    trainable = {k: v.clone().requires_grad_() for k, v in meta.items()}
    updates, _ = lstm_step(trainable, torch.randn(4), init_state(config, 4), config)
    updates.sum().backward()
    assert all(v.grad is not None for v in trainable.values())


def test_a_step_runs_on_at_most_its_threads_and_gives_torchs_count_back(monkeypatch):
    from optimizer3 import runtime

    seen = []
    param = torch.nn.Parameter(torch.zeros(3))
    param.grad = torch.ones(3)
    monkeypatch.setattr(learned_module, "default_threads", lambda: 1)
    default = LearnedOptimizer([param], _meta(), CONFIG)
    untouched = LearnedOptimizer([param], _meta(), CONFIG, threads=0)
    original = default._step_groups
    monkeypatch.setattr(default, "_step_groups", lambda: seen.append(torch.get_num_threads()) or original())
    monkeypatch.setattr(untouched, "_step_groups", lambda: seen.append(torch.get_num_threads()))
    torch.set_num_threads(2)  # the autouse fixture gives the test's count back afterwards
    default.step()
    untouched.step()
    assert seen == [1, 2] and torch.get_num_threads() == 2
    for cores, expected in ((1, 1), (2, 1), (3, 1), (16, 8)):
        monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid, cores=cores: set(range(cores)))
        assert runtime.default_threads() == expected
    with pytest.raises(ValueError, match="Invalid threads: -1"):
        LearnedOptimizer([param], _meta(), CONFIG, threads=-1)


def test_state_dicts_and_pickles_of_earlier_versions_are_turned_to_todays_layout():
    # Before 2026-12-05 the state was kept coordinate-major ([layers, numel, hidden],
    # [numel, columns]) and unmarked: both a state dict and a pickled optimizer of that layout
    # resume where they stopped.
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _meta(MOMENTUM), MOMENTUM)
    _train(model, optimizer, 3)
    old = copy.deepcopy(optimizer.state_dict())
    del old["learned"]["layout"]
    for entry in old["state"].values():
        for key in ("h", "c", "momentum"):
            entry[key] = entry[key].transpose(-1, -2).contiguous()
    pickled = optimizer.__getstate__()
    del pickled["layout"]
    pickled["state"] = {p: {k: v.transpose(-1, -2).contiguous() if k != "step" else v for k, v in s.items()}
                        for p, s in pickled["state"].items()}
    twins = copy.deepcopy({"model": model, "optimizer": optimizer})  # copied together: the same parameters
    expected = _train(twins["model"], twins["optimizer"], 3, first=3)
    twin = copy.deepcopy(model)
    loaded = LearnedOptimizer(twin.parameters(), _meta(MOMENTUM), MOMENTUM)
    loaded.load_state_dict(old)
    assert _train(twin, loaded, 3, first=3) == expected
    unpickled = LearnedOptimizer.__new__(LearnedOptimizer)
    unpickled.__setstate__(pickled)
    assert _train(model, unpickled, 3, first=3) == expected


def test_a_version_1_learned_optimizer_file_still_loads(tmp_path):
    # Version 1 kept the architecture inside the training config, beside how the run computed.
    from optimizer3.learned.files import load_learned_optimizer

    meta = _meta(MOMENTUM, seed=3)
    training = to_dict(MetaTrainConfig(optimizer=MOMENTUM))
    old = {"kind": "optimizer3.learned_optimizer", "version": 1, "meta_params": meta,
           "meta_train": {**training, "compile": True, "device": "cuda", "workers": 2, "matmul_dtype": "bfloat16",
                          "recompute_every": 10}}
    torch.save(old, tmp_path / "v1.pt")
    loaded = load_learned_optimizer(tmp_path / "v1.pt")
    assert loaded.config == MOMENTUM and loaded.meta_train == training and loaded.recipe == ()
    assert all(torch.equal(loaded.meta_params[k], meta[k]) for k in meta)


def test_evaluation_runs_the_learned_optimizer_on_the_commands_threads(monkeypatch):
    from optimizer3.evaluation.runs import run_learned

    seen = []
    monkeypatch.setattr(learned_module, "default_threads", lambda: 1)
    original = LearnedOptimizer._step_groups
    monkeypatch.setattr(LearnedOptimizer, "_step_groups", lambda self: seen.append(torch.get_num_threads())
                        or original(self))
    torch.set_num_threads(2)  # as a command sets them (--threads 2); the fixture gives the count back
    task = QuadraticFamily(dim=3).sample(2, torch.Generator().manual_seed(0))
    run_learned((_meta(), CONFIG), task, 2, seed=0)
    assert seen == [2, 2]
