"""Optimizer³: learned optimizers for PyTorch.

The names below are imported on first use (PEP 562), so that importing the package does not
import torch: the `optimizer3` command sets torch's allocator options before torch starts.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent".
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_MODULES = {
    "LearnedOptimizer": "optimizer3.optim.learned",
    "LSTMOptimizerConfig": "optimizer3.learned.lstm",
    "MLPOptimizerConfig": "optimizer3.learned.mlp",
    "MetaTrainConfig": "optimizer3.meta.config",
    "PESTrainConfig": "optimizer3.meta.config",
    "EvaluationConfig": "optimizer3.evaluation.config",
    "RuntimeConfig": "optimizer3.runtime",
    "TaskConfig": "optimizer3.tasks",
    "load_learned_optimizer": "optimizer3.learned.files",
    "meta_train": "optimizer3.meta.trainer",
    "pes_meta_train": "optimizer3.meta.pes_trainer",
    "compare": "optimizer3.evaluation.compare",
}

__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'optimizer3' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*_MODULES, "__version__"])
