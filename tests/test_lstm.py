import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.learned.lstm import (
    LSTMOptimizerConfig, LSTMState, init_meta_params, init_state, meta_param_shapes, reference_step,
)
from optimizer3.learned.lstm_fast import lstm_step


@pytest.mark.parametrize("update_form", ["linear", "direction_magnitude", "gradient_mix"])
@pytest.mark.parametrize("preprocessing", ["none", "log_sign"])
@pytest.mark.parametrize("layers,hidden", [(1, 5), (2, 20), (3, 8)])
def test_shapes(preprocessing, layers, hidden, update_form):
    config = LSTMOptimizerConfig(layers=layers, hidden_size=hidden, preprocessing=preprocessing,
                                 update_form=update_form)
    params = init_meta_params(config, torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in params.items()} == meta_param_shapes(config)
    state = init_state(config, rows=13)
    updates, new_state = lstm_step(params, torch.randn(13), state, config)
    assert updates.shape == (13,)
    assert len(new_state.h) == len(new_state.c) == layers
    assert all(t.shape == (hidden, 13) for t in new_state.h + new_state.c)


@pytest.mark.parametrize("preprocessing,update_form,momentum_inputs",
                         [("none", "linear", ()), ("log_sign", "linear", ()), ("log_sign", "direction_magnitude", ()),
                          ("log_sign", "linear", (0.5, 0.9)), ("log_sign", "gradient_mix", (0.5, 0.9))])
def test_coordinates_do_not_leak_into_each_other(preprocessing, update_form, momentum_inputs):
    config = LSTMOptimizerConfig(preprocessing=preprocessing, update_form=update_form, momentum_inputs=momentum_inputs)
    params = init_meta_params(config, torch.Generator().manual_seed(1), dtype=torch.float64)
    rows = 6
    state = init_state(config, rows, dtype=torch.float64)
    grads = torch.randn(rows, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    # Two steps so that a leak through the recurrent state would show too.
    def two_steps(g):
        updates, s = lstm_step(params, g, state, config)
        updates, _ = lstm_step(params, g * 0.5, s, config)
        return updates

    jacobian = torch.autograd.functional.jacobian(two_steps, grads)
    off_diagonal = jacobian - torch.diag(torch.diagonal(jacobian))
    assert off_diagonal.abs().max() == 0
    assert torch.diagonal(jacobian).abs().min() > 0


def test_each_row_matches_a_one_row_computation():
    config = LSTMOptimizerConfig()
    params = init_meta_params(config, torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    batched, _ = lstm_step(params, grads, init_state(config, 5, dtype=torch.float64), config)
    for row in range(5):
        single, _ = lstm_step(params, grads[row : row + 1], init_state(config, 1, dtype=torch.float64), config)
        torch.testing.assert_close(batched[row : row + 1], single)


@pytest.mark.parametrize("matmul_dtype", ["float32", "bfloat16"])
def test_state_is_feature_major_and_strided_state_gives_the_same_results(matmul_dtype):
    config = LSTMOptimizerConfig(momentum_inputs=(0.5, 0.9), update_form="gradient_mix", mix_rms_decay=0.9)
    params = init_meta_params(config, torch.Generator().manual_seed(4))
    rows = 7
    state = init_state(config, rows)
    assert [t.shape for t in (*state.h, *state.c, state.momentum)] == [(20, rows)] * 4 + [(4, rows)]
    generator = torch.Generator().manual_seed(5)
    for _ in range(2):  # a second step from a state with values
        grads = torch.randn(rows, generator=generator)
        updates, new = lstm_step(params, grads, state, config, matmul_dtype)
        assert all(t.is_contiguous() for t in (*new.h, *new.c, new.momentum))
        # The same values laid out coordinate-major, as LearnedOptimizer passes its blocks.
        strided = LSTMState(*(tuple(t.t().contiguous().t() for t in part) for part in state[:2]),
                            state.momentum.t().contiguous().t())
        assert not strided.h[0].is_contiguous()
        same_updates, same = lstm_step(params, grads, strided, config, matmul_dtype)
        torch.testing.assert_close(same_updates, updates, rtol=1e-6, atol=1e-7)
        for a, b in zip((*same.h, *same.c, same.momentum), (*new.h, *new.c, new.momentum)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        state = new


def test_output_scale_multiplies_the_update():
    base = LSTMOptimizerConfig(output_scale=1.0)
    params = init_meta_params(base, torch.Generator().manual_seed(3))
    grads = torch.randn(4)
    one, _ = lstm_step(params, grads, init_state(base, 4), base)
    scaled = LSTMOptimizerConfig(output_scale=0.1)
    tenth, _ = lstm_step(params, grads, init_state(scaled, 4), scaled)
    torch.testing.assert_close(tenth, one * 0.1)


def test_init_is_deterministic_per_seed():
    config = LSTMOptimizerConfig()
    a = init_meta_params(config, torch.Generator().manual_seed(5))
    b = init_meta_params(config, torch.Generator().manual_seed(5))
    c = init_meta_params(config, torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"layers": 0}, "layers: 0"), ({"hidden_size": -1}, "hidden size: -1"),
     ({"preprocessing": "x"}, "'x'"), ({"output_scale": 0.0}, "output_scale: 0.0"),
     ({"preprocess_p": -2.0}, "preprocess_p: -2.0"),
     ({"preprocess_p": 90.0}, "preprocess_p: 90.0; use a positive number up to 80"),
     ({"update_form": "exp"}, "update_form: 'exp'"),
     ({"momentum_inputs": (0.9, 1.0)}, "decay: 1.0"), ({"momentum_inputs": (-0.1,)}, "decay: -0.1"),
     ({"momentum_inputs": ("a",)}, "decay: 'a'"), ({"mix_scale": 0.0}, "mix_scale: 0.0"),
     ({"update_form": "gradient_mix", "mix_rms_decay": 1.0}, "mix_rms_decay: 1.0"),
     ({"mix_rms_decay": 0.999}, "--update-form gradient_mix")],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        LSTMOptimizerConfig(**kwargs)


@pytest.mark.parametrize("update_form", ["linear", "direction_magnitude", "gradient_mix"])
def test_zero_output_init_starts_with_zero_updates_and_keeps_the_other_draws(update_form):
    zeros = LSTMOptimizerConfig(output_init="zeros", update_form=update_form)
    params = init_meta_params(zeros, torch.Generator().manual_seed(4))
    updates, _ = lstm_step(params, torch.randn(9), init_state(zeros, 9), zeros)
    assert torch.equal(updates, torch.zeros(9))
    uniform = init_meta_params(LSTMOptimizerConfig(update_form=update_form), torch.Generator().manual_seed(4))
    assert all(torch.equal(params[k], uniform[k]) for k in params if not k.startswith("output."))
    with pytest.raises(UsageError, match="output_init"):
        LSTMOptimizerConfig(output_init="ones")


@pytest.mark.parametrize("lr, mu", [(1.0, 0.9), (0.3, 0.5)])
def test_an_output_bias_warm_start_is_torchs_nag_step_for_step(lr, mu):
    from optimizer3.optim.learned import LearnedOptimizer

    mix_scale = 10.0
    config = LSTMOptimizerConfig(preprocessing="log_sign", update_form="gradient_mix", output_init="zeros",
                                 momentum_inputs=(0.5, 0.9), mix_scale=mix_scale,
                                 output_bias=(0.0, -lr / mix_scale, *[-lr * mu / ((1 - mu) * mix_scale)
                                                                      if d == mu else 0.0 for d in (0.5, 0.9)]))
    params = init_meta_params(config, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert params["output.bias"].tolist() == list(config.output_bias)
    target = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ours = torch.zeros(30, dtype=torch.float64, requires_grad=True)
    theirs = torch.zeros(30, dtype=torch.float64, requires_grad=True)
    learned = LearnedOptimizer([ours], params, config)
    nag = torch.optim.SGD([theirs], lr=lr, momentum=mu, nesterov=True)
    for _ in range(8):
        for x, opt in ((ours, learned), (theirs, nag)):
            opt.zero_grad()
            ((x - target) ** 2 * torch.linspace(0.1, 1, 30, dtype=torch.float64)).sum().backward()
            opt.step()
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    assert not torch.equal(ours, torch.zeros(30, dtype=torch.float64))


@pytest.mark.parametrize("kwargs, match", [
    ({"output_bias": (0.0, -0.1)}, r"output_bias: 2 values for an output layer of 4 \(update form gradient_mix"),
    ({"output_bias": (0.0, -0.1, float("nan"), 0.0)}, "output_bias value: nan"),
    ({"output_bias": (0.0, "a", 0.0, 0.0)}, "output_bias value: 'a'"),
])
def test_a_bad_output_bias_is_refused(kwargs, match):
    with pytest.raises(UsageError, match=match):
        LSTMOptimizerConfig(update_form="gradient_mix", momentum_inputs=(0.5, 0.9), **kwargs)


def _textbook_lstm_step(params, grads, state, config):
    """The LSTM equations as written in the literature, with tanh, one gate at a time."""
    from optimizer3.learned.features import preprocess

    hidden = config.hidden_size
    x = preprocess(grads, config.preprocessing, config.preprocess_p)
    momentum, weights, features = [], [], [grads]
    count = len(config.momentum_inputs)
    for j, decay in enumerate(config.momentum_inputs):
        momentum.append(decay * state.momentum[j] + (1 - decay) * grads)
        seen = momentum[-1]
        if config.momentum_bias_correction:
            weights.append(decay * state.momentum[count + j] + (1 - decay))
            seen = seen / weights[-1]
        features.append(seen)
        x = torch.cat((x, preprocess(seen, config.preprocessing, config.preprocess_p)), 1)
    squares = []
    if config.mix_rms_decay:
        decay = config.mix_rms_decay
        squares = [decay * state.momentum[-2] + (1 - decay) * grads ** 2,
                   decay * state.momentum[-1] + (1 - decay)]
        rms = torch.sqrt(squares[0] / squares[1] + 1e-16)
        features = [feature / rms for feature in features]
    hs, cs = [], []
    for layer in range(config.layers):
        z = torch.cat((x, state.h[layer].t()), 1) @ params[f"lstm.{layer}.weight"] + params[f"lstm.{layer}.bias"]
        i, f, o = (torch.sigmoid(z[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        g = torch.tanh(z[:, 3 * hidden :])
        c = f * state.c[layer].t() + i * g
        x = o * torch.tanh(c)
        hs.append(x)
        cs.append(c)
    if config.update_form == "direction_magnitude":
        direction = x @ params["output.weight"][:, 0] + params["output.bias"][0]
        log_magnitude = x @ params["output.weight"][:, 1] + params["output.bias"][1]
        updates = config.output_scale * direction * torch.exp(log_magnitude)
    elif config.update_form == "gradient_mix":
        out = x @ params["output.weight"] + params["output.bias"]
        updates = config.output_scale * out[:, 0]
        for j, feature in enumerate(features):
            updates = updates + config.mix_scale * out[:, 1 + j] * feature
    else:
        updates = (x @ params["output.weight"] + params["output.bias"]).squeeze(1) * config.output_scale
    return updates, [h.t() for h in hs], [c.t() for c in cs], momentum + weights + squares


@pytest.mark.parametrize("preprocessing,update_form,momentum_inputs,correction,rms_decay", [
    ("log_sign", "gradient_mix", (0.5, 0.9), True, 0.999), ("log_sign", "gradient_mix", (), False, 0.9),
] + [(*case, 0.0) for case in [
    ("none", "linear", (), False), ("log_sign", "linear", (), False), ("log_sign", "direction_magnitude", (), False),
    ("log_sign", "linear", (0.5, 0.9, 0.99), False), ("none", "direction_magnitude", (0.0, 0.9), False),
    ("log_sign", "linear", (0.5, 0.99), True), ("log_sign", "gradient_mix", (0.5, 0.9, 0.99), False),
    ("none", "gradient_mix", (), False), ("log_sign", "gradient_mix", (0.9,), True),
]])
def test_the_reference_step_is_the_textbook_lstm_and_the_fast_step_is_the_reference(
        preprocessing, update_form, momentum_inputs, correction, rms_decay):
    config = LSTMOptimizerConfig(layers=2, hidden_size=7, preprocessing=preprocessing, update_form=update_form,
                                 momentum_inputs=momentum_inputs, momentum_bias_correction=correction,
                                 mix_rms_decay=rms_decay)
    params = init_meta_params(config, torch.Generator().manual_seed(8), dtype=torch.float64)
    rows = 11
    state = init_state(config, rows, dtype=torch.float64)
    # A non-zero state, so that the forget gate, the recurrent weights and the averages matter.
    momentum = None if state.momentum is None else torch.rand_like(state.momentum)  # weights stay positive
    state = type(state)(tuple(torch.randn_like(h) for h in state.h), tuple(3 * torch.randn_like(c) for c in state.c),
                        momentum)
    grads = torch.randn(rows, dtype=torch.float64) * torch.logspace(-8, 1, rows, dtype=torch.float64)
    updates, new_state = reference_step(params, grads, state, config)
    expected, hs, cs, averages = _textbook_lstm_step(params, grads, state, config)
    torch.testing.assert_close(updates, expected, rtol=1e-12, atol=1e-14)
    for got, want in zip(new_state.h + new_state.c, tuple(hs) + tuple(cs)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    if config.momentum_columns:
        torch.testing.assert_close(new_state.momentum, torch.stack(averages), rtol=1e-12, atol=1e-14)
    else:
        assert new_state.momentum is None
    # The fast kernel computes the same function: to 1e-12 in float64, and in float32 to its
    # rounding (1e-5 relative, 1e-8 absolute for updates, 1e-6 absolute for the state of order
    # one, where 2 sigmoid(2x) - 1 loses tanh's relative precision near 0), over two steps.
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        cast = {name: tensor.to(dtype) for name, tensor in params.items()}
        fast_state = reference = LSTMState(*(tuple(t.to(dtype) for t in part) for part in state[:2]),
                                           None if momentum is None else momentum.to(dtype))
        for step in range(2):
            step_grads = (grads * (1 - 0.3 * step)).to(dtype)
            fast, fast_state = lstm_step(cast, step_grads, fast_state, config)
            slow, reference = reference_step(cast, step_grads, reference, config)
            torch.testing.assert_close(fast, slow, rtol=tolerance, atol=tolerance * 1e-3)
            for got, want in zip(fast_state.h + fast_state.c, reference.h + reference.c):
                torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * 0.1)


def test_moving_averages_start_at_zero_and_accumulate():
    config = LSTMOptimizerConfig(hidden_size=4, preprocessing="log_sign", momentum_inputs=(0.5, 0.9))
    params = init_meta_params(config, torch.Generator().manual_seed(9), dtype=torch.float64)
    assert meta_param_shapes(config)["lstm.0.weight"] == (2 * 3 + 4, 16)
    state = init_state(config, 3, dtype=torch.float64)
    assert torch.equal(state.momentum, torch.zeros(2, 3, dtype=torch.float64))
    first, second = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64), torch.tensor([3.0, 0.0, -4.0], dtype=torch.float64)
    _, state = lstm_step(params, first, state, config)
    _, state = lstm_step(params, second, state, config)
    decay = torch.tensor([0.5, 0.9], dtype=torch.float64)
    expected = decay[:, None] * (1 - decay[:, None]) * first + (1 - decay[:, None]) * second
    torch.testing.assert_close(state.momentum, expected, rtol=1e-15, atol=0)
    assert torch.equal(state.detach().momentum, state.momentum)


def test_decays_given_as_a_list_of_ints_become_a_tuple_of_floats():
    config = LSTMOptimizerConfig(momentum_inputs=[0, 0.9])
    assert config.momentum_inputs == (0.0, 0.9) and isinstance(config.momentum_inputs[0], float)
    assert config == LSTMOptimizerConfig(momentum_inputs=(0.0, 0.9))
    lstm_step(init_meta_params(config, torch.Generator()), torch.randn(3), init_state(config, 3), config)


def test_bias_corrected_averages_are_unbiased_from_the_first_step():
    corrected = LSTMOptimizerConfig(hidden_size=4, preprocessing="log_sign", momentum_inputs=(0.5, 0.99),
                                    momentum_bias_correction=True)
    plain = LSTMOptimizerConfig(hidden_size=4, preprocessing="log_sign", momentum_inputs=(0.5, 0.99))
    assert meta_param_shapes(corrected) == meta_param_shapes(plain)
    assert init_state(corrected, 3).momentum.shape == (4, 3)
    from optimizer3.learned.features import encode_features, gradient_features

    grads = torch.tensor([1e-3, -2.0, 0.5], dtype=torch.float64)
    state = init_state(corrected, 3, dtype=torch.float64)
    for step in range(1, 4):  # a constant gradient: every corrected average equals it at once
        features, state.momentum[:] = gradient_features(grads, state.momentum, corrected)
        x = encode_features(features, corrected)
        torch.testing.assert_close(x[2:4], x[0:2], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(x[4:6], x[0:2], rtol=1e-12, atol=1e-12)
        weights = 1 - torch.tensor([0.5, 0.99], dtype=torch.float64) ** step
        torch.testing.assert_close(state.momentum[2:], weights[:, None].expand(2, 3))
    with pytest.raises(UsageError, match="--momentum-inputs"):
        LSTMOptimizerConfig(momentum_bias_correction=True)


def test_gradient_mix_with_constant_outputs_is_heavy_ball_momentum():
    # Zero recurrent and output weights: the outputs are the output bias, the same at every step,
    # so the update is a fixed combination of the gradient and its average.
    config = LSTMOptimizerConfig(hidden_size=3, preprocessing="log_sign", momentum_inputs=(0.9,),
                                 update_form="gradient_mix", mix_scale=10.0)
    params = {k: torch.zeros_like(v) for k, v in init_meta_params(config, torch.Generator().manual_seed(10),
                                                                     dtype=torch.float64).items()}
    assert params["output.bias"].shape == (3,)  # the bias b, the gradient's and the average's coefficients
    params["output.bias"] = torch.tensor([0.0, 0.0, -0.1], dtype=torch.float64)  # -0.1 * 10 = -1 times m
    state = init_state(config, 4, dtype=torch.float64)
    average = torch.zeros(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(12)
    for _ in range(5):
        grads = torch.randn(4, dtype=torch.float64, generator=g)
        updates, state = lstm_step(params, grads, state, config)
        average = 0.9 * average + 0.1 * grads
        # Equal to rounding: an average near zero differs in its last bits relative to itself.
        torch.testing.assert_close(updates, -average, rtol=1e-13, atol=1e-16)


def test_rms_scaled_gradient_mix_with_constant_outputs_is_adam_without_momentum_correction():
    config = LSTMOptimizerConfig(hidden_size=3, preprocessing="log_sign", momentum_inputs=(0.9,),
                                 update_form="gradient_mix", mix_scale=10.0, mix_rms_decay=0.999)
    assert config.momentum_columns == 3 and init_state(config, 2).momentum.shape == (3, 2)
    params = {k: torch.zeros_like(v) for k, v in init_meta_params(config, torch.Generator().manual_seed(11),
                                                                     dtype=torch.float64).items()}
    params["output.bias"] = torch.tensor([0.0, 0.0, -0.001], dtype=torch.float64)  # lr 0.01 on m / rms
    state = init_state(config, 4, dtype=torch.float64)
    average, square = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    g = torch.Generator().manual_seed(13)
    for step in range(1, 6):
        grads = torch.randn(4, dtype=torch.float64, generator=g) * 10.0 ** -step  # the scale does not matter
        updates, state = lstm_step(params, grads, state, config)
        average = 0.9 * average + 0.1 * grads
        square = 0.999 * square + 0.001 * grads**2
        adam = -0.01 * average / (square / (1 - 0.999**step) + 1e-16).sqrt()
        torch.testing.assert_close(updates, adam, rtol=1e-12, atol=0)
