"""Every pretrained optimizer shipped in the package loads safely and matches its card."""

import pytest
import torch

from optimizer3 import pretrained
from optimizer3.config import TaskConfig, from_dict
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.meta.checkpoint import load_learned_optimizer
from optimizer3.tasks import make_task_family
from optimizer3.tasks.quadratic import QuadraticFamily
from optimizer3.trajectories import run_learned

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
    assert config.optimizer == from_dict(LSTMOptimizerConfig, card["optimizer"])  # fields added later take defaults
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
def test_shipped_optimizer_trains_a_model_of_its_task_family(name, request):
    meta_params, config = load_learned_optimizer(pretrained.pretrained_path(name))
    if config.task.name == "quadratic":
        task = QuadraticFamily(dim=config.task.dim).sample(16, torch.Generator().manual_seed(3))
    else:  # real MNIST: on random labels there is little to learn
        mnist_dir = request.getfixturevalue("mnist_dir")
        task = make_task_family(config.task, "heldout", mnist_dir).sample(2, torch.Generator())
    run = run_learned(meta_params, config.optimizer, task, 30, seed=4)
    assert torch.isfinite(run.losses).all()
    assert run.losses[-1].mean() < 0.7 * run.losses[0].mean()
