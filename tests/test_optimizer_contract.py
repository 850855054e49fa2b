"""One battery that every optimizer passes: the baselines and each learned architecture alike.

The `torch.optim` contract (an Optimizer, hyperparameters in param_groups, parameter groups and
add_param_group, step(closure) returning the closure's loss, parameters without a gradient
skipped, state created lazily, state_dict round trips that resume exactly) and descent on a
parabola and the Rosenbrock function.
"""

import copy
import io

import pytest
import torch

from optimizer3.learned import mlp
from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.optim.baselines import make_baseline
from optimizer3.optim.learned import LearnedOptimizer
from test_learned_optimizer import _model, _train

# A coordinatewise LSTM whose output layer starts as torch's NAG at learning rate LR with
# momentum 0.9 (zero output weights, the warm-start bias; tests/test_lstm.py checks it step for
# step): an instance of the architecture whose descent is known.
NAG_LIKE = LSTMOptimizerConfig(preprocessing="log_sign", update_form="gradient_mix", output_init="zeros",
                               momentum_inputs=(0.5, 0.9), output_bias=(0.0, -0.1, 0.0, -0.9))


def _learned(config, lr_scale=1.0):
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    return lambda params, lr: LearnedOptimizer(params, meta, config, lr=lr * lr_scale)


# The per-parameter MLP as it starts (Adam at learning rate 0.05 x lr: tests/test_learned_mlp.py
# checks it step for step), and with a random output layer.
MLP_AS_ADAM = mlp.MLPOptimizerConfig(initial_lr=0.05)


def _mlp(random_output):
    generator = torch.Generator().manual_seed(0)
    meta = mlp.init_meta_params(MLP_AS_ADAM, generator)
    if random_output:
        meta["weight2"] = torch.randn(meta["weight2"].shape, generator=generator)
    return lambda params, lr: LearnedOptimizer(params, meta, MLP_AS_ADAM, lr=lr)


def _pretrained(name):
    return lambda params, lr: LearnedOptimizer.from_pretrained(name, params, lr=lr)


# name -> (factory(params, lr), learning rate for the parabola, for Rosenbrock or None: no
# descent claim there). A learned optimizer's lr multiplies its learned update.
OPTIMIZERS = {
    "sgd": (lambda p, lr: make_baseline("sgd", p, lr), 0.1, 1e-4),
    "nag": (lambda p, lr: make_baseline("nag", p, lr), 0.02, 1e-4),
    "rmsprop": (lambda p, lr: make_baseline("rmsprop", p, lr), 0.03, 1e-2),
    "adam": (lambda p, lr: make_baseline("adam", p, lr), 0.05, 1e-2),
    "lstm-as-nag": (_learned(NAG_LIKE), 0.2, 1e-3),
    "lstm-random": (_learned(LSTMOptimizerConfig(preprocessing="log_sign")), None, None),
    "mlp-as-adam": (_mlp(False), 1.0, 0.2),
    "mlp-random": (_mlp(True), None, None),
    "pretrained-quadratic": (_pretrained("quadratic"), 1.0, None),
    "pretrained-mnist": (_pretrained("mnist"), None, None),
    "pretrained-general": (_pretrained("general"), 1.0, 1.0),
}


def _parabola(x):
    return (x**2).sum()


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


def _descend(name, objective, start, lr, steps):
    x = torch.tensor(start, requires_grad=True)
    optimizer = OPTIMIZERS[name][0]([x], lr)
    for _ in range(steps):
        optimizer.zero_grad()
        objective(x).backward()
        optimizer.step()
    return float(objective(x.detach())), float(objective(torch.tensor(start)))


@pytest.mark.parametrize("name", [name for name, entry in OPTIMIZERS.items() if entry[1] is not None])
def test_descends_a_parabola(name):
    end, start = _descend(name, _parabola, [3.0, -2.0, 0.5], OPTIMIZERS[name][1], 200)
    assert end < 1e-2 * start


@pytest.mark.parametrize("name", [name for name, entry in OPTIMIZERS.items() if entry[2] is not None])
def test_makes_progress_on_rosenbrock(name):
    end, start = _descend(name, _rosenbrock, [-1.0, 1.5], OPTIMIZERS[name][2], 500)
    assert end < 0.5 * start


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_is_a_torch_optimizer_with_its_hyperparameters_in_param_groups(name):
    optimizer = OPTIMIZERS[name][0](_model().parameters(), 0.01)
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert len(optimizer.state) == 0  # state is made lazily, at a parameter's first step


def saved_and_loaded(model, optimizer):
    """The model's and the optimizer's state dicts through torch.save and a weights-only load."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_resumes_exactly(name):
    factory = OPTIMIZERS[name][0]
    model = _model()
    uninterrupted = _train(model, factory(model.parameters(), 0.01), 8)
    model = _model()
    optimizer = factory(model.parameters(), 0.01)
    first = _train(model, optimizer, 4)
    saved = saved_and_loaded(model, optimizer)
    resumed_model = _model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = factory(resumed_model.parameters(), 0.5)  # the state dict brings the lr back
    resumed.load_state_dict(saved["optimizer"])
    assert resumed.param_groups[0]["lr"] == pytest.approx(0.01)
    assert first + _train(resumed_model, resumed, 4, first=4) == uninterrupted


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameter_groups_have_their_own_learning_rate(name):
    factory = OPTIMIZERS[name][0]
    a, b, c = (torch.nn.Parameter(torch.ones(4)) for _ in range(3))
    optimizer = factory([{"params": [a]}, {"params": [b], "lr": 0.0}], 0.01)
    optimizer.add_param_group({"params": [c], "lr": 0.0})
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.01, 0.0, 0.0])
    for _ in range(3):
        optimizer.zero_grad()
        sum(_parabola(p) for p in (a, b, c)).backward()
        optimizer.step()
    assert not torch.equal(a.detach(), torch.ones(4))
    assert torch.equal(b.detach(), torch.ones(4)) and torch.equal(c.detach(), torch.ones(4))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_closure_is_evaluated_with_grad_and_its_loss_returned(name):
    model = _model()
    optimizer = OPTIMIZERS[name][0](model.parameters(), 0.01)
    x = torch.randn(4, 5)

    def closure():
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():  # step enables grad for the closure itself
        loss = optimizer.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_parameters_without_a_gradient_are_skipped_and_get_no_state(name):
    used, unused = torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(3))
    optimizer = OPTIMIZERS[name][0]([used, unused], 0.01)
    before = unused.detach().clone()
    used.grad = torch.ones(3)
    optimizer.step()
    assert torch.equal(unused.detach(), before)
    assert unused not in optimizer.state  # (plain SGD keeps no state at all)
