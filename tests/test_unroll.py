import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params, init_state
from optimizer3.learned.lstm_fast import lstm_step
from optimizer3.meta.unroll import LOG_LOSS_EPS, loss_and_grad, start, unroll
from optimizer3.tasks.quadratic import QuadraticFamily


def _setup(dtype=torch.float64):
    config = LSTMOptimizerConfig()
    meta = init_meta_params(config, torch.Generator().manual_seed(0), dtype=dtype)
    task = QuadraticFamily(dim=3).sample(4, torch.Generator().manual_seed(1), dtype=dtype)
    return config, meta, task


def test_unroll_matches_a_hand_written_loop():
    config, meta, task = _setup()
    carry, _ = start(task, config, torch.Generator())
    _, _, losses = unroll(meta, config, task, carry, 5, torch.Generator())
    params = task.init(torch.Generator())
    state = init_state(config, params.numel(), dtype=params.dtype)
    for t in range(5):
        p = params.detach().requires_grad_()
        (g,) = torch.autograd.grad(task.loss(p).sum(), p)
        updates, state = lstm_step(meta, g.reshape(-1), state, config)
        params = params + updates.view_as(params)
        torch.testing.assert_close(losses[t], task.loss(params))


def test_meta_loss_is_the_weighted_sum_of_mean_losses():
    config, meta, task = _setup()
    carry, _ = start(task, config, torch.Generator())
    weights = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    meta_loss, carry2, losses = unroll(meta, config, task, carry, 3, torch.Generator(), weights=weights)
    torch.testing.assert_close(meta_loss, (losses.mean(1) * weights).sum())
    assert carry2.step == 3


def test_log_loss_meta_objective_is_the_weighted_sum_of_mean_log_losses():
    config, meta, task = _setup()
    carry, _ = start(task, config, torch.Generator())
    weights = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    meta_loss, _, losses = unroll(meta, config, task, carry, 3, torch.Generator(), weights=weights, log_loss=True)
    torch.testing.assert_close(meta_loss, ((losses + LOG_LOSS_EPS).log().mean(1) * weights).sum())


def test_truncations_chain_into_the_full_trajectory():
    config, meta, task = _setup()
    carry, _ = start(task, config, torch.Generator())
    _, _, whole = unroll(meta, config, task, carry, 6, torch.Generator())
    _, half, first = unroll(meta, config, task, carry, 3, torch.Generator())
    _, _, second = unroll(meta, config, task, half.detach(), 3, torch.Generator())
    torch.testing.assert_close(torch.cat((first, second)), whole)


def test_detached_gradients_drop_second_derivatives_and_the_flag_keeps_them():
    config, meta, task = _setup()
    for tensor in meta.values():
        tensor.requires_grad_()
    carry, _ = start(task, config, torch.Generator())

    def meta_gradient(second_order):
        loss, _, _ = unroll(meta, config, task, carry, 4, torch.Generator(), second_order=second_order)
        return torch.autograd.grad(loss, list(meta.values()))

    first, second = meta_gradient(False), meta_gradient(True)
    difference = sum(float((a - b).abs().sum()) for a, b in zip(first, second))
    assert difference > 1e-8  # the Hessian term matters on a quadratic

    # With the flag the meta-gradient is the meta-loss's true derivative: central differences
    # of the unrolled meta-loss (float64) agree with it, and not with the first-order one.
    index = list(meta).index("lstm.0.weight")
    weight = meta["lstm.0.weight"]
    for position in [(0, 0), (3, 5), (20, 70)]:
        def meta_loss(shift):
            with torch.no_grad():
                weight[position] += shift
            loss, _, _ = unroll(meta, config, task, carry, 4, torch.Generator(), second_order=True)
            with torch.no_grad():
                weight[position] -= shift
            return float(loss.detach())

        numeric = (meta_loss(1e-6) - meta_loss(-1e-6)) / 2e-6
        assert abs(float(second[index][position]) - numeric) < 1e-6 * max(1.0, abs(numeric))
        assert abs(float(first[index][position]) - numeric) > abs(float(second[index][position]) - numeric)


def test_first_order_meta_gradient_matches_its_closed_form():
    # With gradients detached, the output bias b moves every update by output_scale * b and
    # changes nothing the LSTM sees, and d(loss at θ_s)/dθ_s is the optimizee gradient g_s.
    # So d(meta-loss)/db = scale * sum_s (number of updates before θ_s) * mean_n sum_i g_s.
    config, meta, task = _setup()
    name = "output.bias"
    meta[name].requires_grad_()
    carry, _ = start(task, config, torch.Generator())
    loss, _, _ = unroll(meta, config, task, carry, 3, torch.Generator())
    (analytic,) = torch.autograd.grad(loss, meta[name])
    grads, params, state = [], carry.params, carry.state
    g = carry.grads
    for _ in range(3):
        updates, state = lstm_step(meta, g.reshape(-1), state, config)
        params = params + updates.view_as(params)
        _, g = loss_and_grad(task, params.detach(), None, False)
        grads.append(g)
    expected = sum(config.output_scale * (t + 1) * grads[t].sum(1).mean() for t in range(3))
    torch.testing.assert_close(analytic.squeeze(), expected.detach(), rtol=1e-6, atol=1e-8)
