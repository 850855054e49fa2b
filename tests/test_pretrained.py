"""Every pretrained optimizer shipped in the package loads safely and matches its card."""

import dataclasses

import pytest
import torch

from optimizer3 import pretrained
from optimizer3.configs import from_dict
from optimizer3.evaluation.runs import run_learned
from optimizer3.learned.files import load_learned_optimizer
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.learned.mlp import MLPOptimizerConfig
from optimizer3.meta.config import MetaTrainConfig, PESTrainConfig
from optimizer3.tasks import TaskConfig, make_task_family
from optimizer3.tasks.quadratic import QuadraticFamily
from optimizer3.tasks.suite import META_TRAINING, SUITE

NAMES = pretrained.available()
# The shipped optimizers of each architecture: the paper's LSTM, meta-trained on one task family
# by truncated BPTT, and the per-parameter MLP, meta-trained by PES on a mix of the benchmark's.
MLP_NAMES = [name for name in NAMES if pretrained.load_card(name).get("architecture") == "mlp"]
LSTM_NAMES = [name for name in NAMES if name not in MLP_NAMES]


def test_the_package_ships_a_curated_set_the_default_first():
    assert NAMES == list(pretrained.ORDER) and len(NAMES) <= 5
    assert NAMES[0] == "mnist"
    for name in NAMES:
        assert f"\n  {name} " in "\n" + pretrained.GUIDE


@pytest.mark.parametrize("name", LSTM_NAMES)
def test_shipped_file_is_a_plain_dict_that_matches_its_card(name):
    card = pretrained.load_card(name)
    path = pretrained.PRETRAINED_DIR / card["file"]
    assert isinstance(torch.load(path, weights_only=True), dict)
    assert pretrained.sha256(path) == card["sha256"]
    loaded = load_learned_optimizer(path)
    meta = from_dict(MetaTrainConfig, loaded.meta_train)
    assert loaded.config == meta.optimizer == from_dict(LSTMOptimizerConfig, card["optimizer"])
    assert meta.task == from_dict(TaskConfig, card["task"])
    assert card["purpose"] and card["known_failures"] and all(isinstance(f, str) for f in card["known_failures"])
    training = card["meta_training"]
    assert training["command"].startswith("optimizer3 ") and training["seed"] == meta.seed
    assert training["seconds"] > 0 and training["code_version"].startswith("0.")
    assert training["machine"]["processor"] and training["date"]
    # The recipe: every stage that made it, the last this one; the card names their commands.
    assert [stage["run"]["command"] for stage in loaded.recipe] == [stage["command"] for stage in card["recipe"]]
    assert loaded.recipe[-1]["meta_train"] == loaded.meta_train
    for stage in loaded.recipe:  # every stage of the same architecture (how it starts aside)
        architecture = from_dict(MetaTrainConfig, stage["meta_train"]).optimizer
        assert dataclasses.replace(architecture, output_init="zeros", output_bias=()) == dataclasses.replace(
            loaded.config, output_init="zeros", output_bias=())
    evaluation = card["evaluation"]
    assert evaluation["command"].startswith("optimizer3 ")
    assert {"lstm", "sgd", "nag", "rmsprop", "adam"} <= set(evaluation["final_loss"])
    assert evaluation["test_problems"] >= 100


@pytest.mark.parametrize("name", MLP_NAMES)
def test_shipped_mlp_file_is_a_plain_dict_that_matches_its_card(name):
    card = pretrained.load_card(name)
    path = pretrained.PRETRAINED_DIR / card["file"]
    assert isinstance(torch.load(path, weights_only=True), dict)
    assert pretrained.sha256(path) == card["sha256"]
    loaded = load_learned_optimizer(path)
    meta = from_dict(PESTrainConfig, loaded.meta_train)
    assert loaded.config == meta.optimizer == from_dict(MLPOptimizerConfig, card["optimizer"])
    assert card["purpose"] and card["known_failures"] and all(isinstance(f, str) for f in card["known_failures"])
    training = card["meta_training"]
    assert training["command"].startswith("optimizer3 reproduce general") and training["seed"] == meta.seed
    assert training["seconds"] > 0 and training["machine"]["processor"] and training["date"]
    assert training["tasks"] == list(meta.tasks) and all(SUITE[task].split == META_TRAINING for task in meta.tasks)
    assert [stage["run"]["command"] for stage in loaded.recipe] == [stage["command"] for stage in card["recipe"]]
    # Its evaluation is the benchmark, every held-out task of it.
    held_out = {task for task, spec in SUITE.items() if spec.split != META_TRAINING and not spec.long}
    assert held_out <= set(card["benchmark"]["ratios"])


@pytest.mark.parametrize("name", MLP_NAMES)
def test_shipped_mlp_optimizer_trains_a_model_of_its_meta_training_mix(name, mnist_dir):
    loaded = load_learned_optimizer(pretrained.pretrained_path(name))
    for task_name in ("quadratic-10", "mnist8-mlp-relu"):
        task = SUITE[task_name].family_of(mnist_dir.parent, "cpu").sample(4, torch.Generator().manual_seed(3))
        run = run_learned((loaded.meta_params, loaded.config), task, 30, seed=4)
        assert torch.isfinite(run.losses).all()
        assert run.losses[-1].mean() < 0.7 * run.losses[0].mean(), task_name


@pytest.mark.parametrize("name", LSTM_NAMES)
def test_shipped_optimizer_trains_a_model_of_its_task_family(name, request):
    loaded = load_learned_optimizer(pretrained.pretrained_path(name))
    task_config = from_dict(MetaTrainConfig, loaded.meta_train).task
    if task_config.name == "quadratic":
        task = QuadraticFamily(dim=task_config.dim).sample(16, torch.Generator().manual_seed(3))
    else:  # real MNIST: on random labels there is little to learn
        mnist_dir = request.getfixturevalue("mnist_dir")
        task = make_task_family(task_config, "heldout", mnist_dir).sample(2, torch.Generator())
    run = run_learned((loaded.meta_params, loaded.config), task, 30, seed=4)
    assert torch.isfinite(run.losses).all()
    assert run.losses[-1].mean() < 0.7 * run.losses[0].mean()
