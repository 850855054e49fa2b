"""Small causal transformer character language models, many instances trained as one computation.

Every instance has its own initial weights and its own minibatches of windows of the text. Each
weight of every instance is a slice of its row; a layer is one batched matrix product over the
instance dimension (`torch.baddbmm`), so K instances cost one product per layer, not K.

References: Vaswani et al. 2017, "Attention is all you need", section 3 (the transformer);
Radford et al. 2019, "Language models are unsupervised multitask learners", section 2.3
(LayerNorm at each block's input and after the last block).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.text import Corpus

TEST_WINDOWS = 256  # the fixed windows of the test text on which the held-out loss is measured
# Test windows per chunk in `test_metric`: at most about this many numbers in its largest tensor.
TEST_CHUNK_NUMBERS = 2**24
SPLITS = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class CharLMTask:
    """`num_problems` transformer instances on one split of the text."""

    text: torch.Tensor  # int64 character ids of the split
    test_text: torch.Tensor
    vocab_size: int
    num_problems: int
    context: int
    width: int
    heads: int
    layers: int
    batch_size: int
    init_scale: float

    test_metric_name = "held-out loss"

    @property
    def chance_loss(self) -> float:
        return math.log(self.vocab_size)

    def parameter_kinds(self) -> list[tuple[tuple[int, ...], str]]:
        """Each parameter tensor's shape and kind (embedding, weight, gain, bias), in the row's order:
        embeddings; per block LayerNorm, attention (query, key and value side by side) and its
        output, LayerNorm, MLP; final LayerNorm, head. Weights are (fan_in, fan_out)."""
        v, t, w = self.vocab_size, self.context, self.width
        block = [((w,), "gain"), ((w,), "bias"), ((w, 3 * w), "weight"), ((3 * w,), "bias"),
                 ((w, w), "weight"), ((w,), "bias"), ((w,), "gain"), ((w,), "bias"),
                 ((w, 4 * w), "weight"), ((4 * w,), "bias"), ((4 * w, w), "weight"), ((w,), "bias")]
        return [((v, w), "embedding"), ((t, w), "embedding"), *block * self.layers,
                ((w,), "gain"), ((w,), "bias"), ((w, v), "weight"), ((v,), "bias")]

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(shape for shape, _ in self.parameter_kinds())

    @property
    def dim(self) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes)

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """Embeddings N(0, init_scale²), weights N(0, (init_scale / sqrt(fan_in))²), LayerNorm gains
        one and biases zero, for every instance (LayerNorm follows the embeddings, so their
        scale is the residual stream's).

        Drawn by the CPU `generator` on every device, then moved to the text's device.
        """
        pieces = []
        for shape, kind in self.parameter_kinds():
            size = (self.num_problems, math.prod(shape))
            if kind in ("embedding", "weight"):
                std = self.init_scale / (math.sqrt(shape[0]) if kind == "weight" else 1.0)
                pieces.append(torch.randn(size, generator=generator) * std)
            else:
                pieces.append(torch.ones(size) if kind == "gain" else torch.zeros(size))
        return torch.cat(pieces, dim=1).to(self.text.device)

    def rows(self, start: int, stop: int) -> "CharLMTask":
        """Instances start..stop-1 as a task of their own."""
        return dataclasses.replace(self, num_problems=stop - start)

    def sample_batch(self, generator: torch.Generator) -> torch.Tensor:
        """The first positions of each instance's own windows of context + 1 characters, shape
        [instances, batch_size] (drawn on the CPU, placed with the text)."""
        starts = torch.randint(0, len(self.text) - self.context, (self.num_problems, self.batch_size),
                               generator=generator)
        return starts.to(self.text.device)

    def logits(self, params: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-character scores [instances, windows, positions, vocab] of the instances `params`
        [instances, dim] on tokens [instances or 1 (shared), windows, positions]."""
        instances, (_, windows, length) = params.shape[0], tokens.shape
        sizes = [math.prod(shape) for shape in self.parameter_shapes]
        pieces: Iterator[torch.Tensor] = (
            piece.view(instances, *shape) for piece, shape in zip(params.split(sizes, dim=1), self.parameter_shapes))
        embedding, positions = next(pieces), next(pieces)
        # Instance i's character c is row i * vocab + c of the instances' tables stacked.
        ids = tokens + self.vocab_size * torch.arange(instances, device=tokens.device).view(-1, 1, 1)
        x = embedding.reshape(-1, self.width).index_select(0, ids.reshape(-1)).view(instances, -1, length, self.width)
        x = (x + positions[:, None, :length]).view(instances, windows * length, self.width)
        for _ in range(self.layers):
            gain, bias, qkv, qkv_bias, out, out_bias, gain2, bias2, up, up_bias, down, down_bias = (
                next(pieces) for _ in range(12))
            x = x + self._attention(self._norm(x, gain, bias), windows, qkv, qkv_bias, out, out_bias)
            hidden = F.gelu(_affine(self._norm(x, gain2, bias2), up, up_bias))
            x = x + _affine(hidden, down, down_bias)
        gain, bias, head, head_bias = pieces
        x = _affine(self._norm(x, gain, bias), head, head_bias)
        return x.view(instances, windows, length, self.vocab_size)

    def _norm(self, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """LayerNorm of x [instances, tokens, width] with each instance's gain and bias."""
        return torch.addcmul(bias.unsqueeze(1), F.layer_norm(x, (self.width,)), gain.unsqueeze(1))

    def _attention(self, x: torch.Tensor, windows: int, qkv: torch.Tensor, qkv_bias: torch.Tensor,
                   out: torch.Tensor, out_bias: torch.Tensor) -> torch.Tensor:
        """Causal multi-head self-attention within each window, x [instances, windows * positions, width]."""
        instances, tokens, width = x.shape
        length, head = tokens // windows, width // self.heads
        # [3, instances * windows, heads, positions, head width]
        q, k, v = (_affine(x, qkv, qkv_bias).view(instances * windows, length, 3, self.heads, head)
                   .permute(2, 0, 3, 1, 4).unbind(0))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return _affine(y.transpose(1, 2).reshape(instances, tokens, width), out, out_bias)

    def _windows(self, text: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """The context + 1 characters from each start, shape [*starts.shape, context + 1]."""
        return text[starts.unsqueeze(-1) + torch.arange(self.context + 1, device=starts.device)]

    def _mean_loss(self, params: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """Mean next-character cross-entropy of each instance over `windows` [instances or 1, n, context + 1]."""
        logits = self.logits(params, windows[..., :-1])
        targets = windows[..., 1:].expand(*logits.shape[:-1])
        losses = F.cross_entropy(logits.reshape(-1, self.vocab_size), targets.reshape(-1), reduction="none")
        return losses.view(params.shape[0], -1).mean(dim=1)

    def loss(self, params: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Mean next-character cross-entropy of each instance on its own windows, shape [instances]."""
        return self._mean_loss(params, self._windows(self.text, batch))

    def copies_loss(self, params: Sequence[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """`loss` of several copies of the instances, each with its own [instances, dim]
        parameters, on the same minibatches, shape [copies, instances]: the copies are more
        instances of one computation, each reading its instance's windows."""
        return self.loss(torch.cat(list(params)), batch.repeat(len(params), 1)).view(len(params), -1)

    @torch.no_grad()
    def test_metric(self, params: torch.Tensor) -> torch.Tensor:
        """Each instance's mean loss on `TEST_WINDOWS` fixed, evenly spaced windows of the test
        text, shape [instances]; the windows are read in chunks, so that memory stays bounded."""
        starts = torch.linspace(0, len(self.test_text) - self.context - 1, TEST_WINDOWS).long()
        windows = self._windows(self.test_text, starts.to(self.test_text.device)).unsqueeze(0)
        widest = max(4 * self.width, self.vocab_size, self.heads * self.context)
        chunk = max(1, TEST_CHUNK_NUMBERS // (params.shape[0] * self.context * widest))
        total = torch.zeros(params.shape[0], device=params.device)
        for begin in range(0, TEST_WINDOWS, chunk):
            part = windows[:, begin : begin + chunk]
            total += self._mean_loss(params, part) * part.shape[1]
        return total / TEST_WINDOWS


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x [instances, tokens, fan_in] @ weight [instances, fan_in, fan_out] + bias [instances, fan_out]."""
    return torch.baddbmm(bias.unsqueeze(1), x, weight)


@dataclasses.dataclass(frozen=True)
class CharLMFamily:
    """Transformer character language models on the meta-training ("train") or the held-out
    ("heldout") part of a text; `test_metric` is the loss on the text's test part.

    A model: token and position embeddings; `layers` blocks of pre-LayerNorm causal attention
    with `heads` heads and a 4x-wide GELU MLP, each added to the residual stream; a final
    LayerNorm and a linear head to the vocabulary. Loss: the mean next-character cross-entropy
    over each instance's `batch_size` windows of `context` characters.
    """

    corpus: Corpus
    context: int = 32
    width: int = 32
    heads: int = 2
    layers: int = 1
    batch_size: int = 32
    init_scale: float = 1.0
    split: str = "train"

    def __post_init__(self) -> None:
        for name in ("context", "width", "heads", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"Invalid {name}: {getattr(self, name)}; use 1 or more")
        if self.width % self.heads:
            raise UsageError(f"Invalid heads: {self.heads} do not divide the width {self.width}; use a divisor")
        if self.layers < 0:
            raise UsageError(f"Invalid layers: {self.layers}; use 0 or more")
        if not self.init_scale > 0:
            raise UsageError(f"Invalid init_scale: {self.init_scale}; use a positive number")
        if self.split not in SPLITS:
            raise UsageError(f"Unknown split: {self.split!r}; choose train or heldout")
        if not self.corpus.vocab:
            raise UsageError("The corpus has an empty vocabulary; give a corpus with text in it")
        for part in (self.split, "test"):
            if len(getattr(self.corpus, part)) <= self.context:
                raise UsageError(
                    f"The corpus's {part} text has {len(getattr(self.corpus, part))} characters, too few for "
                    f"windows of context {self.context} + 1; use a shorter context or a longer text"
                )

    def sample(self, num_problems: int, generator: torch.Generator) -> CharLMTask:
        if num_problems < 1:
            raise UsageError(f"Invalid number of problems: {num_problems}; use 1 or more")
        del generator  # instances differ by their init and minibatches, drawn later
        return CharLMTask(getattr(self.corpus, self.split), self.corpus.test, len(self.corpus.vocab), num_problems,
                          self.context, self.width, self.heads, self.layers, self.batch_size, self.init_scale)
