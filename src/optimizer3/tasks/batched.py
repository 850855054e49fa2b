"""Batched matrix algebra for many MLP instances, and copies of them, computed as one."""

from __future__ import annotations

import torch


def stack(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """torch.stack, without a copy for a single tensor."""
    return tensors[0].unsqueeze(dim) if len(tensors) == 1 else torch.stack(tensors, dim)


class SideBySide(torch.autograd.Function):
    """`torch.baddbmm(bias, inputs, weight)` for copies whose weights and biases stand side by
    side in the columns, with each copy's gradients computed as its own `baddbmm`'s would be.

    A column of a matrix product does not depend on its neighbours, so the forward pass and the
    weights' gradient match a copy's own product up to the BLAS's rounding (bit for bit at
    `reproduce mnist`'s shapes with one machine's MKL, measured 2026-11-28); the bias
    gradient, a sum over the examples, is taken per copy on a tensor of that copy's own
    shape, because over the wide tensor the sum rounds differently.
    """

    @staticmethod
    def forward(ctx, bias, inputs, weight, copies):
        ctx.save_for_backward(inputs, weight)
        ctx.copies = copies
        return torch.baddbmm(bias, inputs, weight)

    @staticmethod
    def backward(ctx, grad):
        inputs, weight = ctx.saved_tensors
        grad_bias = grad_inputs = grad_weight = None
        if ctx.needs_input_grad[0]:
            per_copy = grad.chunk(ctx.copies, dim=2)
            grad_bias = torch.cat([part.contiguous().sum(1, keepdim=True) for part in per_copy], dim=2)
        if ctx.needs_input_grad[1]:
            grad_inputs = grad.bmm(weight.transpose(1, 2))
        if ctx.needs_input_grad[2]:
            grad_weight = inputs.transpose(1, 2).bmm(grad)
        return grad_bias, grad_inputs, grad_weight, None
