"""A meta-trained learned optimizer as a `torch.optim.Optimizer`, for any PyTorch model.

The class only gathers tensors; the update rule is the architecture's own step function, the
same one meta-training runs:

- the per-parameter MLP (`learned.mlp.mlp_step`), one call per parameter tensor, which it
  sees whole (its features are normalized over the tensor);
- the paper's coordinatewise LSTM (`learned.lstm_fast.lstm_step`), applied to each
  parameter's coordinates in blocks of rows (`chunk_rows`): small ones on a CPU, so that the
  LSTM's intermediate values stay in its cache, large ones on a GPU, where every block costs
  the same few dozen kernel launches.

    opt = LearnedOptimizer.from_pretrained("general", model.parameters())
    loss.backward(); opt.step(); opt.zero_grad()

Memory per float32 parameter coordinate: the MLP keeps four floats (three moving averages and
a second moment; 16 bytes, where Adam keeps 8) plus a row and a column of each matrix. The LSTM
keeps its hidden and cell state, 2 x layers x hidden floats (80 for the default 2 layers of 20
units: 320 bytes), and one more float per moving average of an LSTM with `momentum_inputs` (two
with `momentum_bias_correction`), and two more with `mix_rms_decay`.

References: Andrychowicz et al. 2016, section 2.1; Metz et al. 2022 (the MLP's features).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import CheckpointError
from optimizer3.learned.files import ARCHITECTURES, OptimizerConfig, architecture_name, check_meta_params, load_learned_optimizer
from optimizer3.learned.lstm import LSTMOptimizerConfig, LSTMState, MetaParams
from optimizer3.learned.lstm_fast import step_function
from optimizer3.learned.mlp import MLPOptimizerConfig, MLPState, matrix_shape, mlp_step
from optimizer3.runtime import default_threads

# Rows per block, from `python benchmarks/step_cost.py --sweep-blocks` (BENCHMARKS.md): on a CPU
# 8,192 rows ran a one-million-parameter step fastest; on a GPU, blocks of 2^20 rows (small
# blocks are launch-bound), which bounds the memory that one block's intermediate values take
# (about 1 GB in float32).
CHUNK_ROWS = 8192
ACCELERATOR_CHUNK_ROWS = 1 << 20


# How the per-parameter state is laid out: feature-major, as `LSTMState`. State dicts and pickles
# without this mark come from versions before 2026-12-05, which kept it coordinate-major
# ([layers, numel, hidden] and [numel, momentum_columns]); they are turned around on loading.
LAYOUT = "feature_major"
STATE_KEYS = ("h", "c", "momentum")
MLP_STATE_KEYS = ("momentum", "second", "row", "col")


def _feature_major(state: dict[str, Any]) -> dict[str, Any]:
    """One parameter's state in the coordinate-major layout of earlier versions, turned around."""
    return {key: value.transpose(-1, -2).contiguous() if key in STATE_KEYS and isinstance(value, torch.Tensor)
            else value for key, value in state.items()}


def chunk_rows(device: torch.device) -> int:
    """Rows of coordinates per call of the update rule on `device`."""
    return CHUNK_ROWS if device.type == "cpu" else ACCELERATOR_CHUNK_ROWS


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """float64 parameters keep float64 state; every other float type keeps float32."""
    return torch.float64 if param.dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def _at_most_threads(threads: int) -> Iterator[None]:
    """torch's CPU threads capped at `threads` (0: no cap) for the block, then as they were."""
    before = torch.get_num_threads()
    if not threads or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LearnedOptimizer(torch.optim.Optimizer):
    """A learned optimizer (the per-parameter MLP or the paper's LSTM) for any parameters.

    Args:
      params: parameters or parameter groups, as for any `torch.optim` optimizer.
      meta_params: the learned optimizer's weights (from meta-training; see `from_pretrained`).
      config: the architecture that `meta_params` were trained with (`MLPOptimizerConfig` or
        `LSTMOptimizerConfig`).
      lr: multiplies the learned update. 1 (the default) applies exactly the update the
        optimizer was meta-trained to make; a learning-rate scheduler scales it as it would scale SGD's
        step, which takes the optimizer outside what it was meta-trained on.
      maximize: maximize the objective instead of minimizing it.
      compile: apply the LSTM's update rule through `torch.compile` (`learned.lstm_fast.step_function`):
        faster steps on large models (BENCHMARKS.md) after a first compile of seconds to a
        minute; results equal to floating-point rounding. (The MLP's step is not compiled.)
      threads: at most this many torch CPU threads during a step (restored after it); None:
        `runtime.default_threads()`, half the cores: a step is hundreds of small operations,
        and with every core's thread it ran 12 times slower on a 2-core machine shared with one
        other busy process, with half of them 1.8 times (BENCHMARKS.md, "Threads"); 0: torch's
        own setting, untouched.

    State per parameter (in `self.state[p]`, created at its first step), for the MLP its
    `MLPState` for a batch of one (`momentum` [3, rows, cols], `second` [rows, cols], `row`
    [rows], `col` [cols], with (rows, cols) = `learned.mlp.matrix_shape(p.shape)`) and `step`;
    for the LSTM laid out as the update rule's own `LSTMState` is (feature-major): `h` and `c`, the LSTM's hidden and cell
    state of shape [layers, hidden, numel], `step`, and for an LSTM with `momentum_inputs` or
    `mix_rms_decay` the gradient's moving averages `momentum`, [momentum_columns, numel]. The
    state is float32 for float32, bfloat16 and float16 parameters, float64 for float64 ones.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        meta_params: MetaParams,
        config: OptimizerConfig,
        lr: float = 1.0,
        maximize: bool = False,
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        if not (isinstance(lr, (int, float)) and lr >= 0.0):
            raise ValueError(f"Invalid learning rate: {lr}")
        if compile and isinstance(config, MLPOptimizerConfig):
            raise ValueError("compile=True compiles the LSTM's step; the per-parameter MLP's runs as it is: leave it False")
        if threads is not None and not (isinstance(threads, int) and threads >= 0):
            raise ValueError(f"Invalid threads: {threads!r}; use None, 0 or a positive integer")
        try:
            check_meta_params(meta_params, config, "LearnedOptimizer(meta_params=...)")
        except CheckpointError as error:
            raise ValueError(str(error)) from None
        self.config = config
        self.threads = default_threads() if threads is None else threads
        self._compile = compile
        self._step_function = step_function(compile)
        self.meta_params = {k: v.detach().clone() for k, v in meta_params.items()}
        self._meta_cache: dict[tuple[torch.device, torch.dtype], MetaParams] = {}
        super().__init__(params, {"lr": lr, "maximize": maximize})

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer pickles only defaults, state and param_groups; a copy or an
        # unpickled optimizer also needs the LSTM itself.
        return {**super().__getstate__(), "config": self.config, "meta_params": self.meta_params,
                "compile": self._compile, "threads": self.threads, "layout": LAYOUT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Also what torch.optim's load_state_dict calls, with state and groups alone.
        state = dict(state)
        if "config" in state:
            self.config, self.meta_params = state.pop("config"), state.pop("meta_params")
            self._compile, self.threads = state.pop("compile"), state.pop("threads", default_threads())
            self._step_function = step_function(self._compile)
            self._meta_cache = {}
            if state.pop("layout", None) != LAYOUT:  # pickled by an earlier version
                state["state"] = {param: _feature_major(entry) for param, entry in state["state"].items()}
        super().__setstate__(state)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], params, **kwargs: Any) -> "LearnedOptimizer":
        """From a learned-optimizer file or a meta-training checkpoint (its best meta-parameters)."""
        loaded = load_learned_optimizer(path)
        return cls(params, loaded.meta_params, loaded.config, **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, params, **kwargs: Any) -> "LearnedOptimizer":
        """From one of the pretrained optimizers shipped in the package (`list-pretrained`)."""
        from optimizer3.pretrained import pretrained_path

        return cls.from_file(pretrained_path(name), params, **kwargs)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        # Listed once and stored back: a generator (model.parameters()) can be read only once.
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        param_group = {**param_group, "params": params}
        for param in params:
            if not param.is_floating_point():
                raise ValueError(
                    f"LearnedOptimizer updates real floating-point parameters; got a {param.dtype} "
                    f"parameter of shape {tuple(param.shape)}"
                )
        super().add_param_group(param_group)

    def _meta_params_for(self, device: torch.device, dtype: torch.dtype) -> MetaParams:
        key = (device, dtype)
        if key not in self._meta_cache:
            self._meta_cache[key] = {k: v.to(device=device, dtype=dtype) for k, v in self.meta_params.items()}
        return self._meta_cache[key]

    def _state_shapes(self, param: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """The shape of each state tensor of `param`: for the LSTM feature-major, one column per
        coordinate; for the MLP its `MLPState` for one problem."""
        if isinstance(self.config, MLPOptimizerConfig):
            rows, cols = matrix_shape(param.shape)
            return {"momentum": (len(self.config.momentum_decays), rows, cols), "second": (rows, cols),
                    "row": (rows,), "col": (cols,)}
        lstm = (self.config.layers, self.config.hidden_size, param.numel())
        shapes = {"h": lstm, "c": lstm}
        if self.config.momentum_columns:
            shapes["momentum"] = (self.config.momentum_columns, param.numel())
        return shapes

    def _init_state(self, param: torch.Tensor) -> dict[str, Any]:
        """Zero state of `param`, in the shapes of `_state_shapes`."""
        return {"step": 0, **{key: torch.zeros(shape, dtype=state_dtype(param), device=param.device)
                              for key, shape in self._state_shapes(param).items()}}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with _at_most_threads(self.threads):
            self._step_groups()
        return loss

    def _step_groups(self) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError(
                        "LearnedOptimizer does not support sparse gradients; use dense gradients "
                        "(for nn.Embedding, sparse=False)"
                    )
                state = self.state[param]
                if not state:
                    state.update(self._init_state(param))
                dtype = state_dtype(param)
                grads = param.grad.to(dtype)
                if isinstance(self.config, MLPOptimizerConfig):
                    updates = self._mlp_updates(param.to(dtype), -grads if group["maximize"] else grads, state)
                else:
                    grads = grads.reshape(-1)
                    updates = self._updates(-grads if group["maximize"] else grads, state)
                param.add_(updates.view(param.shape), alpha=group["lr"])
                state["step"] += 1

    def _mlp_updates(self, param: torch.Tensor, grads: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """The MLP's update of one parameter tensor, advancing its state in place."""
        shape = (1, *matrix_shape(param.shape))
        current = MLPState(state["momentum"].unsqueeze(1), state["second"].unsqueeze(0), state["row"].unsqueeze(0),
                           state["col"].unsqueeze(0), state["step"])
        meta_params = self._meta_params_for(grads.device, grads.dtype)
        updates, new = mlp_step(meta_params, param.reshape(shape), grads.reshape(shape), current, self.config)
        for key in MLP_STATE_KEYS:
            state[key].copy_(getattr(new, key).view_as(state[key]))
        return updates

    def _updates(self, grads: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """The learned update of every coordinate, advancing its state in place, block by block."""
        meta_params = self._meta_params_for(grads.device, grads.dtype)
        h, c, momentum = state["h"], state["c"], state.get("momentum")
        updates = torch.empty_like(grads)
        layers = range(self.config.layers)
        block_rows = chunk_rows(grads.device)
        for begin in range(0, grads.numel(), block_rows):
            rows = slice(begin, begin + block_rows)
            block = LSTMState(tuple(h[k, :, rows] for k in layers), tuple(c[k, :, rows] for k in layers),
                              None if momentum is None else momentum[:, rows])
            updates[rows], new = self._step_function(meta_params, grads[rows], block, self.config)
            for k in layers:
                h[k, :, rows] = new.h[k]
                c[k, :, rows] = new.c[k]
            if momentum is not None:
                momentum[:, rows] = new.momentum
        return updates

    def _shapes(self) -> list[list[list[int]]]:
        """The shape of every parameter, group by group: what a state dict must match."""
        return [[list(p.shape) for p in group["params"]] for group in self.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state dict plus the learned optimizer itself (architecture, weights)."""
        state = super().state_dict()
        state["learned"] = {
            "architecture": architecture_name(self.config),
            "optimizer": to_dict(self.config),
            "meta_params": {k: v.clone() for k, v in self.meta_params.items()},
            "shapes": self._shapes(),
            "layout": LAYOUT,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore parameter groups, per-parameter state and the meta-parameters.

        The state dict must come from a LearnedOptimizer of the same architecture over
        parameters of the same shapes; anything else is refused before the optimizer changes.
        """
        learned = state_dict.get("learned") if isinstance(state_dict, dict) else None
        if not isinstance(learned, dict) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("Not a LearnedOptimizer state dict: it has no 'learned' entry")
        name = learned.get("architecture", "lstm")
        if name not in ARCHITECTURES:
            raise ValueError(f"The state dict is for a learned optimizer of architecture {name!r}; this "
                             f"optimizer3 knows {', '.join(ARCHITECTURES)}")
        config = from_dict(ARCHITECTURES[name][0], learned.get("optimizer"))
        if config != self.config:
            raise ValueError(
                f"The state dict is for a learned optimizer of architecture {config}; this one is "
                f"{self.config}"
            )
        try:
            check_meta_params(learned.get("meta_params"), config, "the state dict")
        except CheckpointError as error:
            raise ValueError(str(error)) from None
        saved_groups = state_dict["param_groups"]
        shapes = self._shapes()
        if learned.get("shapes") != shapes:
            raise ValueError(
                f"The state dict is for parameters of shapes {learned.get('shapes')}; this optimizer "
                f"has {shapes} (groups of parameter shapes, in order)"
            )
        by_id = {
            saved_id: param
            for saved, group in zip(saved_groups, self.param_groups)
            for saved_id, param in zip(saved["params"], group["params"])
        }
        saved_states = state_dict["state"]
        if learned.get("layout") != LAYOUT:  # written by an earlier version
            saved_states = {key: _feature_major(value) if isinstance(value, dict) else value
                            for key, value in saved_states.items()}
        restored = {}
        for saved_id, saved_state in saved_states.items():
            param = by_id.get(saved_id)
            shapes = None if param is None else self._state_shapes(param)
            if shapes is None or not isinstance(saved_state, dict) or set(saved_state) != {"step", *shapes}:
                raise ValueError(f"The state dict's state for parameter {saved_id} is not LearnedOptimizer state")
            for key, expected in shapes.items():
                got = tuple(saved_state[key].shape) if isinstance(saved_state[key], torch.Tensor) else None
                if got != expected:
                    raise ValueError(
                        f"The state dict's optimizer state {key} for parameter {saved_id} has shape {got}; "
                        f"a parameter of shape {tuple(param.shape)} needs {expected}"
                    )
            restored[param] = {
                "step": int(saved_state["step"]),
                **{key: saved_state[key].to(device=param.device, dtype=state_dtype(param), copy=True)
                   for key in shapes},
            }
        super().load_state_dict({"state": {}, "param_groups": saved_groups})
        self.meta_params = {k: v.detach().clone() for k, v in learned["meta_params"].items()}
        self._meta_cache.clear()
        for param, saved_state in restored.items():
            self.state[param] = saved_state
