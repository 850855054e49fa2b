import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer3.errors import UsageError
from optimizer3.learned.features import input_size, log_sign, preprocess


def test_log_sign_large_gradients_are_log_magnitude_and_sign():
    grads = torch.tensor([1.0, -2.0, 1e-3, -1e30], dtype=torch.float64)
    out = log_sign(grads, p=10.0)
    expected_log = torch.log(grads.abs()) / 10.0
    torch.testing.assert_close(out[:, 0], expected_log)
    torch.testing.assert_close(out[:, 1], torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64))


def test_log_sign_tiny_and_zero_gradients_use_the_linear_branch():
    p = 10.0
    grads = torch.tensor([0.0, 1e-6, -1e-6, 1e-40], dtype=torch.float64)
    out = log_sign(grads, p)
    torch.testing.assert_close(out[:, 0], torch.full((4,), -1.0, dtype=torch.float64))
    torch.testing.assert_close(out[:, 1], grads * math.exp(p))


def test_log_sign_is_continuous_in_sign_at_the_threshold():
    p = 5.0
    threshold = math.exp(-p)
    just_above = log_sign(torch.tensor([threshold * (1 + 1e-9)], dtype=torch.float64), p)
    just_below = log_sign(torch.tensor([threshold * (1 - 1e-9)], dtype=torch.float64), p)
    # Both branches give (-1, ±1) at the threshold: the encoding has no jump there.
    torch.testing.assert_close(just_above, just_below, atol=1e-6, rtol=0)


def test_log_sign_gradient_is_finite_for_zero_input():
    grads = torch.zeros(3, requires_grad=True)
    log_sign(grads, 10.0).sum().backward()
    assert torch.isfinite(grads.grad).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=20),
       st.floats(min_value=0.5, max_value=20))
def test_log_sign_is_finite_and_bounded_sign_part(values, p):
    out = log_sign(torch.tensor(values, dtype=torch.float32), p)
    assert out.shape == (len(values), 2)
    assert torch.isfinite(out).all()
    assert (out[:, 1].abs() <= 1.0 + 1e-6).all()


def test_none_passes_gradients_through():
    grads = torch.randn(7)
    out = preprocess(grads, "none", 10.0)
    assert out.shape == (7, 1)
    torch.testing.assert_close(out[:, 0], grads)


@pytest.mark.parametrize("preprocessing", ["log_sign", "none"])
def test_dim_places_the_inputs_axis(preprocessing):
    grads = torch.randn(3, 5, dtype=torch.float64) * torch.logspace(-6, 1, 5, dtype=torch.float64)
    flat = preprocess(grads.reshape(-1), preprocessing, 10.0)  # [15, input_size]
    middle = preprocess(grads, preprocessing, 10.0, dim=1)  # [3, input_size, 5]
    assert middle.shape == (3, input_size(preprocessing), 5)
    assert torch.equal(middle.movedim(1, -1).reshape(15, -1), flat)


def test_unknown_preprocessing_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="'sqrt'.*log_sign, none"):
        input_size("sqrt")
    assert input_size("log_sign") == 2 and input_size("none") == 1
