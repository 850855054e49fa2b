"""Every pretrained optimizer shipped in the package loads safely and matches its card."""

import pytest
import torch

from optimizer3 import LearnedOptimizer, pretrained
from optimizer3.config import TaskConfig, from_dict, to_dict
from optimizer3.meta.checkpoint import load_learned_optimizer

NAMES = pretrained.available()


def test_the_package_ships_the_quadratic_and_mnist_optimizers():
    assert {"quadratic", "mnist"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_file_is_a_plain_dict_that_matches_its_card(name):
    card = pretrained.load_card(name)
    path = pretrained.PRETRAINED_DIR / card["file"]
    assert isinstance(torch.load(path, weights_only=True), dict)
    assert pretrained.sha256(path) == card["sha256"]
    meta_params, config = load_learned_optimizer(path)
    assert to_dict(config.optimizer) == card["optimizer"]
    assert config.task == from_dict(TaskConfig, card["task"])
    training = card["meta_training"]
    assert training["command"].startswith("optimizer3 ") and training["seed"] == config.seed
    assert training["seconds"] > 0 and training["code_version"].startswith("0.")
    assert training["machine"]["processor"] and training["date"]
    evaluation = card["evaluation"]
    assert evaluation["command"].startswith("optimizer3 ")
    assert {"lstm", "sgd", "nag", "rmsprop", "adam"} <= set(evaluation["final_loss"])
    assert evaluation["test_problems"] >= 100


@pytest.mark.parametrize("name", NAMES)
def test_shipped_optimizer_runs_as_a_torch_optimizer(name):
    param = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = LearnedOptimizer.from_pretrained(name, [param])
    for _ in range(5):
        optimizer.zero_grad()
        param.square().sum().backward()
        optimizer.step()
    assert torch.isfinite(param).all() and optimizer.state[param]["step"] == 5
