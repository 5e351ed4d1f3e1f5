"""Sparse kernels behind the SAE: gathered encoder pre-activations and bag-sum decoding.

A top-k SAE only ever uses k of n_latents pre-activations per sample. The encoder forward
still needs every pre-activation (to pick the top k), but its backward only needs the k
selected ones: instead of two dense (batch x d x n_latents) matmuls, the gradients are
bag-sums over the selected rows (`embedding_bag`), O(batch * k * d). The decoder likewise
sums k decoder rows per sample instead of multiplying by a mostly-zero dense code.

Selected entries are a flat COO list `(rows, cols, vals)` with `rows` sorted ascending, so
per-sample bags are contiguous and variable bag sizes (BatchTopK, thresholds) need no padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bag_offsets(rows: torch.Tensor, n_bags: int) -> torch.Tensor:
    """Start offset of each bag for `rows` sorted ascending (empty bags allowed)."""
    counts = torch.bincount(rows, minlength=n_bags)
    return torch.cumsum(counts, 0) - counts


def bag_sum(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, table: torch.Tensor, n_bags: int
) -> torch.Tensor:
    """out[b] = sum over entries with rows == b of vals * table[cols]; rows must be sorted.

    Differentiable in `vals` and `table`.
    """
    if cols.numel() == 0:
        return table.new_zeros(n_bags, table.shape[1]) + 0.0 * vals.sum()
    return F.embedding_bag(
        cols, table, bag_offsets(rows, n_bags), mode="sum", per_sample_weights=vals.to(table.dtype)
    )


class GatherPreacts(torch.autograd.Function):
    """Pre-activations `xc[rows] . W[cols] + b[cols]`, already computed, with a sparse backward.

    forward(xc, W, b, rows, cols, selected) returns `selected` (computed under no_grad from
    the dense pre-activations, so the forward costs nothing extra); backward computes the
    gradients of xc, W and b touching only the selected (row, col) pairs.
    """

    @staticmethod
    def forward(ctx, xc, W, b, rows, cols, selected):  # type: ignore[override]
        """Save what backward needs and pass the selected pre-activations through."""
        ctx.save_for_backward(xc, W, rows, cols)
        ctx.n_b = b.shape[0]
        return selected.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """Sparse gradients: grad_xc = G W, grad_W = G^T xc, grad_b = column sums of G."""
        xc, W, rows, cols = ctx.saved_tensors
        grad_xc = grad_W = grad_b = None
        grad = grad.contiguous()
        if ctx.needs_input_grad[0]:
            order = torch.argsort(rows, stable=True)
            grad_xc = bag_sum(rows[order], cols[order], grad[order], W, xc.shape[0])
        if ctx.needs_input_grad[1]:
            # Transpose trick: bags are latents, the table is the batch of inputs.
            order = torch.argsort(cols, stable=True)
            grad_W = bag_sum(cols[order], rows[order], grad[order], xc, W.shape[0])
        if ctx.needs_input_grad[2]:
            grad_b = grad.new_zeros(ctx.n_b).index_add_(0, cols, grad)
        return grad_xc, grad_W, grad_b, None, None, None
