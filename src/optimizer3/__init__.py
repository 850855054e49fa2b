"""Optimizer³: learned optimizers for PyTorch.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent".
"""

from optimizer3.config import EvaluationConfig
from optimizer3.config import MetaTrainConfig
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.learned.lstm import LSTMState
from optimizer3.learned.lstm import init_meta_params
from optimizer3.learned.lstm import init_state
from optimizer3.learned.lstm import lstm_step
from optimizer3.meta.checkpoint import load_checkpoint
from optimizer3.meta.trainer import meta_train
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks import TASK_NAMES
from optimizer3.tasks import TaskConfig
from optimizer3.tasks.quadratic import QuadraticFamily

__version__ = "0.1.0"

__all__ = [
    "EvaluationConfig",
    "LSTMOptimizerConfig",
    "LearnedOptimizer",
    "LSTMState",
    "MetaTrainConfig",
    "QuadraticFamily",
    "TASK_NAMES",
    "TaskConfig",
    "init_meta_params",
    "init_state",
    "load_checkpoint",
    "lstm_step",
    "meta_train",
]
