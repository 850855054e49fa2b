"""The LSTM step through torch.compile: the same update rule, to floating-point rounding."""

import shutil

import pytest
import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.learned.lstm_fast import lstm_step, step_function
from optimizer3.meta.unroll import start, unroll
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks.quadratic import QuadraticFamily

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="torch.compile needs a C++ compiler on CPU")

CONFIG = LSTMOptimizerConfig(preprocessing="log_sign")
# The MNIST recipes' optimizer: moving averages as inputs, the gradient mix as the update.
MIX_CONFIG = LSTMOptimizerConfig(preprocessing="log_sign", momentum_inputs=(0.5, 0.9, 0.99),
                                 momentum_bias_correction=True, update_form="gradient_mix",
                                 output_init="zeros")


@pytest.fixture(autouse=True)
def _fresh_compilation():
    """Each test compiles afresh: past torch.compile's recompile limit (one compilation per
    configuration, dtype and gradient mode) it would run the eager step and compare it with
    itself."""
    torch._dynamo.reset()
    yield


def _meta(config=CONFIG):
    return init_meta_params(config, torch.Generator().manual_seed(0))


def test_step_function_is_the_eager_step_unless_compiled():
    assert step_function(False) is lstm_step
    assert step_function(True) is step_function(True) is not lstm_step


def test_compiled_drop_in_follows_the_eager_trajectory():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 17), torch.nn.Tanh(), torch.nn.Linear(17, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(30, 17), torch.nn.Tanh(), torch.nn.Linear(17, 3))
    twin.load_state_dict(model.state_dict())
    eager = LearnedOptimizer(model.parameters(), _meta(), CONFIG)
    compiled = LearnedOptimizer(twin.parameters(), _meta(), CONFIG, compile=True)
    inputs, targets = torch.randn(64, 30), torch.randn(64, 3)
    for _ in range(5):
        for net, opt in ((model, eager), (twin, compiled)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(inputs), targets).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(eager.state[p]["h"], compiled.state[q]["h"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config,second_order", [(CONFIG, False), (MIX_CONFIG, False), (MIX_CONFIG, True)],
                         ids=["paper", "mix", "mix-second-order"])
@pytest.mark.parametrize("matmul_dtype,rtol", [("float32", 1e-4), ("bfloat16", 1e-3)])
def test_compiled_meta_gradient_matches_the_eager_one(matmul_dtype, rtol, config, second_order):
    # The compiled step keeps its sigmoids for the backward (selective checkpointing) and
    # compiles as one graph; the meta-gradient must not change.
    task = QuadraticFamily(dim=6).sample(8, torch.Generator().manual_seed(1))
    grads = []
    for compile in (False, True):
        meta = {k: v.requires_grad_() for k, v in _meta(config).items()}
        if config.update_form == "gradient_mix":  # zero outputs would leave the LSTM no gradient
            meta["output.weight"].data.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(4))
        carry, _ = start(task, config, torch.Generator().manual_seed(2))
        meta_loss, _, _ = unroll(meta, config, task, carry, 6, torch.Generator().manual_seed(3), compile=compile,
                                 matmul_dtype=matmul_dtype, second_order=second_order)
        meta_loss.backward()
        grads.append({k: v.grad for k, v in meta.items()})
    for name in grads[0]:
        eager, compiled = grads[0][name], grads[1][name]
        assert eager.norm() > 0, name  # a gradient that is there to compare
        # Relative to the whole gradient: rounding differs element by element, most in the
        # mix's products of large and small numbers.
        assert (compiled - eager).norm() <= rtol * eager.norm(), name


def test_compiled_meta_graph_keeps_the_sigmoids(monkeypatch):
    # The compiled step's backward uses the forward's sigmoids instead of recomputing them
    # (learned.lstm_fast._lstm_step_saving_sigmoids): the checkpoint policy sees them while tracing.
    from optimizer3.learned import lstm_fast as lstm

    asked, original = [], lstm._save_sigmoids

    def policy(context, op, *args, **kwargs):
        asked.append(op)
        return original(context, op, *args, **kwargs)

    monkeypatch.setattr(lstm, "_save_sigmoids", policy)
    task = QuadraticFamily(dim=6).sample(4, torch.Generator().manual_seed(1))
    meta = {k: v.requires_grad_() for k, v in _meta().items()}
    carry, _ = start(task, CONFIG, torch.Generator().manual_seed(2))
    meta_loss, _, _ = unroll(meta, CONFIG, task, carry, 3, torch.Generator().manual_seed(3), compile=True)
    meta_loss.backward()
    assert torch.ops.aten.sigmoid.default in asked
    assert original(None, torch.ops.aten.sigmoid.default) == torch.utils.checkpoint.CheckpointPolicy.MUST_SAVE


def test_a_compiled_step_inside_recomputed_segments_gives_the_same_meta_gradient():
    # Recomputation (segments run again in the backward) around the compiled step's own
    # selective checkpoint: the meta-gradient must not change.
    import dataclasses

    from optimizer3.meta.config import MetaTrainConfig
    from optimizer3.meta.truncated_bptt import meta_gradient
    from optimizer3.runtime import RuntimeConfig
    from optimizer3.tasks import TaskConfig

    config = MetaTrainConfig(task=TaskConfig(dim=6), optimizer=MIX_CONFIG, horizon=8, unroll=8)
    task = QuadraticFamily(dim=6).sample(8, torch.Generator().manual_seed(1))
    grads = []
    for runtime in (RuntimeConfig(), RuntimeConfig(compile=True, recompute_every=3)):
        meta = {k: v.requires_grad_() for k, v in _meta(MIX_CONFIG).items()}
        meta["output.weight"].data.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(4))
        carry, _ = start(task, MIX_CONFIG, torch.Generator().manual_seed(2))
        meta_gradient(meta, dataclasses.replace(config), runtime, task, carry, torch.Generator().manual_seed(3),
                      torch.ones(8))
        grads.append(torch.cat([v.grad.flatten() for v in meta.values()]))
    assert grads[0].norm() > 0
    assert (grads[1] - grads[0]).norm() <= 1e-4 * grads[0].norm()
