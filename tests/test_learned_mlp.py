"""The per-parameter MLP optimizer (learned/mlp.py): its start as Adam, its invariances, its
update cap, and one set of meta-parameters per problem against one problem at a time."""

import math

import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.learned import mlp
from optimizer3.learned.files import load_learned_optimizer, make_optimizer_file
from optimizer3.learned.mlp import (
    FEATURES, MLPOptimizerConfig, init_meta_params, init_state, matrix_shape, meta_param_shapes, mlp_step,
)
from optimizer3.optim.learned import LearnedOptimizer


def _random_meta(config, seed=0):
    """Meta-parameters with a non-zero output layer: the MLP matters, not only the skip."""
    generator = torch.Generator().manual_seed(seed)
    meta = init_meta_params(config, generator)
    last = len(config.hidden_sizes)
    meta[f"weight{last}"] = torch.randn(meta[f"weight{last}"].shape, generator=generator)
    meta["skip"] = torch.randn(len(FEATURES), generator=generator) * 0.5
    return {name: tensor.double() for name, tensor in meta.items()}


def _steps(meta, config, params, grads_list):
    """Updates of successive gradients on one tensor [batch, rows, cols], state carried."""
    state = init_state(config, params.shape[0], params.shape[1], params.shape[2], dtype=params.dtype)
    updates = []
    for grads in grads_list:
        update, state = mlp_step(meta, params, grads, state, config)
        params = params + update
        updates.append(update)
    return updates


def test_new_meta_parameters_step_as_adam():
    config = MLPOptimizerConfig(initial_lr=0.01)
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    twin.load_state_dict(model.state_dict())
    learned = LearnedOptimizer(model.parameters(), meta, config)
    adam = torch.optim.Adam(twin.parameters(), lr=math.exp(float(meta["log_lr"])))
    inputs = torch.randn(32, 5, dtype=torch.float64)
    for _ in range(30):
        for net, optimizer in ((model, learned), (twin, adam)):
            optimizer.zero_grad()
            net(inputs).square().mean().backward()
            optimizer.step()
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-12)


def test_the_update_does_not_change_when_the_loss_is_rescaled():
    config = MLPOptimizerConfig(epsilon=1e-30)
    meta = _random_meta(config)
    generator = torch.Generator().manual_seed(1)
    params = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    grads = [torch.randn(2, 6, 5, generator=generator, dtype=torch.float64) for _ in range(5)]
    base = _steps(meta, config, params, grads)
    for scale in (1e-4, 1e3):
        scaled = _steps(meta, config, params, [g * scale for g in grads])
        for ours, theirs in zip(scaled, base):
            torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-15)


def test_the_update_is_capped_over_each_tensor():
    config = MLPOptimizerConfig(update_cap=0.5)
    meta = _random_meta(config)
    meta["skip"] = torch.full((len(FEATURES),), 50.0, dtype=torch.float64)  # a blown-up output
    generator = torch.Generator().manual_seed(2)
    params = torch.randn(3, 4, 9, generator=generator, dtype=torch.float64)
    grads = torch.randn(3, 4, 9, generator=generator, dtype=torch.float64)
    (update,) = _steps(meta, config, params, [grads])
    rms = update.square().mean(dim=(1, 2)).sqrt()
    lr = math.exp(float(meta["log_lr"]))
    torch.testing.assert_close(rms, torch.full((3,), 0.5 * lr, dtype=torch.float64))


def test_one_meta_parameter_set_per_problem_equals_each_problem_alone():
    config = MLPOptimizerConfig()
    metas = [_random_meta(config, seed) for seed in range(3)]
    batched = {name: torch.stack([meta[name] for meta in metas]) for name in metas[0]}
    generator = torch.Generator().manual_seed(3)
    params = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    grads = [torch.randn(3, 5, 4, generator=generator, dtype=torch.float64) for _ in range(4)]
    together = _steps(batched, config, params, grads)
    for problem, meta in enumerate(metas):
        alone = _steps(meta, config, params[problem : problem + 1], [g[problem : problem + 1] for g in grads])
        for ours, theirs in zip(together, alone):
            torch.testing.assert_close(ours[problem : problem + 1], theirs, rtol=1e-12, atol=1e-15)


def test_blocks_of_coordinates_compute_the_whole_tensor(monkeypatch):
    config = MLPOptimizerConfig()
    meta = _random_meta(config)
    generator = torch.Generator().manual_seed(4)
    params = torch.randn(2, 7, 5, generator=generator, dtype=torch.float64)
    grads = [torch.randn(2, 7, 5, generator=generator, dtype=torch.float64) for _ in range(3)]
    whole = _steps(meta, config, params, grads)
    monkeypatch.setattr(mlp, "BLOCK", 6)  # three coordinates of each of the two problems per block
    for ours, theirs in zip(_steps(meta, config, params, grads), whole):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)


def test_a_learned_optimizer_file_round_trips(tmp_path):
    config = MLPOptimizerConfig(hidden_sizes=(4, 3))
    meta = {name: tensor.float() for name, tensor in _random_meta(config).items()}
    torch.save(make_optimizer_file(config, meta, {"seed": 0}), tmp_path / "mine.pt")
    loaded = load_learned_optimizer(tmp_path / "mine.pt")
    assert loaded.config == config and all(torch.equal(loaded.meta_params[k], meta[k]) for k in meta)
    model = torch.nn.Linear(3, 2)
    optimizer = LearnedOptimizer.from_file(tmp_path / "mine.pt", model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    assert set(optimizer.state[model.weight]) == {"step", "momentum", "second", "row", "col"}


@pytest.mark.parametrize("shape, expected", [((), (1, 1)), ((7,), (1, 7)), ((3, 4), (3, 4)), ((8, 2, 3, 3), (8, 18))])
def test_parameters_are_seen_as_matrices(shape, expected):
    assert matrix_shape(shape) == expected


def test_meta_parameter_shapes_follow_the_hidden_sizes():
    shapes = meta_param_shapes(MLPOptimizerConfig(hidden_sizes=(4,)))
    assert shapes == {"weight0": (len(FEATURES), 4), "bias0": (4,), "weight1": (4, 1), "bias1": (1,),
                      "skip": (len(FEATURES),), "log_lr": ()}


@pytest.mark.parametrize("field, value, message", [
    ("hidden_sizes", (0,), "Invalid hidden_sizes"),
    ("hidden_sizes", (), "Invalid hidden_sizes"),
    ("momentum_decays", (0.9,), "Invalid momentum_decays"),
    ("second_moment_decay", 1.0, "Invalid second_moment_decay"),
    ("update_cap", 0.0, "Invalid update_cap: 0.0"),
    ("initial_lr", -1.0, "Invalid initial_lr: -1.0"),
])
def test_bad_settings_are_refused_by_name(field, value, message):
    with pytest.raises(UsageError, match=message):
        MLPOptimizerConfig(**{field: value})
