import dataclasses
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rows_and_copies_match
from optimizer3.errors import UsageError
from optimizer3.tasks import char_lm
from optimizer3.tasks.char_lm import CharLMFamily
from optimizer3.tasks.text import Corpus


def _corpus(vocab=12, length=6000, seed=0):
    """A Markov chain over `vocab` characters: next = 5 * current + 1 (mod vocab) with chance
    0.8, else a random character; split 80/10/10 like the real corpus."""
    g = torch.Generator().manual_seed(seed)
    ids, noise = [0], torch.randint(0, vocab, (length,), generator=g)
    jumps = torch.rand(length, generator=g) < 0.2
    for t in range(1, length):
        ids.append(int(noise[t]) if jumps[t] else (5 * ids[-1] + 1) % vocab)
    ids = torch.tensor(ids)
    first, second = int(0.8 * length), int(0.9 * length)
    return Corpus(ids[:first], ids[first:second], ids[second:], "".join(chr(97 + i) for i in range(vocab)),
                  pathlib.Path("synthetic"))


def _reference_loss(task, row, windows):
    """One instance's mean loss on windows [n, context + 1], by the transformer written out."""
    sizes = [math.prod(shape) for shape in task.parameter_shapes]
    pieces = iter(piece.view(shape) for piece, shape in zip(row.split(sizes), task.parameter_shapes))
    tokens, targets = windows[:, :-1], windows[:, 1:]
    n, length, width, heads = *tokens.shape, task.width, task.heads
    x = next(pieces)[tokens] + next(pieces)[:length]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for _ in range(task.layers):
        gain, bias, qkv, qkv_bias, out, out_bias, gain2, bias2, up, up_bias, down, down_bias = (
            next(pieces) for _ in range(12))
        q, k, v = (F.layer_norm(x, (width,), gain, bias) @ qkv + qkv_bias).split(width, dim=-1)
        q, k, v = (t.view(n, length, heads, -1).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(2, 3) / math.sqrt(width // heads)).masked_fill(~causal, -math.inf)
        attended = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, length, width)
        x = x + attended @ out + out_bias
        x = x + F.gelu(F.layer_norm(x, (width,), gain2, bias2) @ up + up_bias) @ down + down_bias
    gain, bias, head, head_bias = pieces
    logits = F.layer_norm(x, (width,), gain, bias) @ head + head_bias
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@pytest.mark.parametrize("layers,heads", [(1, 2), (2, 4), (0, 1)])
def test_batched_instances_match_the_transformer_written_out_one_instance_at_a_time(layers, heads):
    task = CharLMFamily(_corpus(), context=7, width=8, heads=heads, layers=layers, batch_size=3).sample(
        3, torch.Generator())
    g = torch.Generator().manual_seed(1)
    start, batch = task.init(g), task.sample_batch(g)
    # Nonzero biases and gains other than one, so that every parameter matters.
    params = (start + 0.2 * torch.randn(start.shape, generator=g)).double().requires_grad_()
    losses = task.loss(params, batch)
    windows = task.text[batch.unsqueeze(-1) + torch.arange(8)]
    references = torch.stack([_reference_loss(task, params[i], windows[i]) for i in range(3)])
    torch.testing.assert_close(losses, references)
    (batched,) = torch.autograd.grad(losses.sum(), params)
    (alone,) = torch.autograd.grad(references.sum(), params)
    torch.testing.assert_close(batched, alone)
    assert bool((batched != 0).any(dim=1).all()) and not torch.allclose(batched[0], batched[1])


def test_rows_and_copies_give_each_instances_own_loss():
    task = CharLMFamily(_corpus(), context=16, width=16, batch_size=4).sample(4, torch.Generator())
    assert_rows_and_copies_match(task)


def test_shapes_init_and_splits():
    corpus = _corpus()
    task = CharLMFamily(corpus, context=16, width=8, heads=2, layers=2, init_scale=0.5).sample(
        5, torch.Generator())
    w = 8
    block = ((w,), (w,), (w, 3 * w), (3 * w,), (w, w), (w,), (w,), (w,), (w, 4 * w), (4 * w,), (4 * w, w), (w,))
    assert task.parameter_shapes == ((12, w), (16, w), *block, *block, (w,), (w,), (w, 12), (12,))
    assert sum(math.prod(shape) for shape in task.parameter_shapes) == task.dim
    assert task.chance_loss == pytest.approx(math.log(12)) and task.test_metric_name == "held-out loss"
    params = task.init(torch.Generator().manual_seed(0))
    assert abs(float(params[:, : 12 * w].std()) - 0.5) < 0.05  # embeddings N(0, init_scale²)
    assert torch.equal(params[:, 28 * w : 29 * w], torch.ones(5, w))  # the first LayerNorm's gain
    assert not params[:, 29 * w : 30 * w].any()  # and bias
    assert abs(float(params[:, 30 * w : 33 * w].std()) - 0.5 / math.sqrt(w)) < 0.03  # LeCun weights
    assert task.text is corpus.train
    held = CharLMFamily(corpus, context=16, split="heldout").sample(2, torch.Generator())
    assert held.text is corpus.heldout and held.test_text is corpus.test
    starts = held.sample_batch(torch.Generator().manual_seed(0))
    assert starts.shape == (2, 32) and int(starts.min()) >= 0 and int(starts.max()) <= len(corpus.heldout) - 17


def test_test_metric_is_the_loss_on_fixed_test_windows(monkeypatch):
    task = CharLMFamily(_corpus(), context=16, width=16).sample(3, torch.Generator())
    params = task.init(torch.Generator().manual_seed(0))
    metric = task.test_metric(params)
    assert metric.shape == (3,) and bool(torch.isfinite(metric).all())
    assert bool(((metric - task.chance_loss).abs() < 1.0).all())  # near chance at the start
    starts = torch.linspace(0, len(task.test_text) - 17, 256).long().expand(3, 256)
    torch.testing.assert_close(metric, dataclasses.replace(task, text=task.test_text).loss(params, starts))
    monkeypatch.setattr(char_lm, "TEST_CHUNK_NUMBERS", 3 * 16 * 64 * 10)  # chunks of 10 windows
    torch.testing.assert_close(task.test_metric(params), metric)
    torch.testing.assert_close(task.rows(2, 3).test_metric(params[2:3]), metric[2:3])


def test_adam_lowers_the_loss_below_chance():
    from optimizer3.evaluation.runs import run_baselines

    family = CharLMFamily(_corpus(), context=16, width=16, batch_size=8, split="heldout")
    task = family.sample(2, torch.Generator())
    runs = run_baselines("adam", [0.003, 0.01], task, 40, seed=0)
    for run in runs:
        assert bool(torch.isfinite(run.losses).all())
        assert float(run.losses[-5:].mean()) < task.chance_loss - 0.5
    after = task.test_metric(runs[1].params)
    assert bool((after < task.chance_loss - 0.5).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [({"context": 0}, "context: 0"), ({"width": 0}, "width: 0"), ({"heads": 0}, "heads: 0"),
     ({"width": 10, "heads": 3}, "3 do not divide the width 10"), ({"layers": -1}, "layers: -1"),
     ({"batch_size": 0}, "batch_size: 0"), ({"init_scale": -1.0}, "init_scale: -1.0"),
     ({"split": "test"}, "split: 'test'"), ({"context": 600}, "test text has 600 characters")],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(UsageError, match=match):
        CharLMFamily(_corpus(), **kwargs)


def test_no_problems_and_an_empty_vocabulary_are_refused():
    with pytest.raises(UsageError, match="number of problems: 0"):
        CharLMFamily(_corpus()).sample(0, torch.Generator())
    with pytest.raises(UsageError, match="empty vocabulary"):
        CharLMFamily(dataclasses.replace(_corpus(), vocab=""))
