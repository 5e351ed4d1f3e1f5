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

import functools

import torch
import torch.nn.functional as F

from sae._native import native_row_topk


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
    vals = vals.to(table.dtype)
    offsets = bag_offsets(rows, n_bags)
    if not table.requires_grad or not torch.is_grad_enabled():
        return F.embedding_bag(cols, table, offsets, mode="sum", per_sample_weights=vals)
    # embedding_bag's own table gradient is a slow scatter on CPU; _TableGrad computes it as
    # a bag sum with the roles swapped. embedding_bag still provides the gradient of vals.
    out = F.embedding_bag(cols, table.detach(), offsets, mode="sum", per_sample_weights=vals)
    return _TableGrad.apply(out, table, rows, cols, vals.detach())


class _TableGrad(torch.autograd.Function):
    """Identity on `out` (a bag sum of `table` rows) that adds the table's gradient:
    grad_table[c] = sum over entries with cols == c of vals * grad_out[rows], itself a bag sum
    with bags = columns and table = grad_out."""

    @staticmethod
    def forward(ctx, out, table, rows, cols, vals):  # type: ignore[override]
        """Pass `out` through; remember the entries."""
        ctx.save_for_backward(rows, cols, vals)
        ctx.n_table = table.shape[0]
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """grad for out unchanged; grad for table by the transposed bag sum."""
        rows, cols, vals = ctx.saved_tensors
        grad_table = None
        if ctx.needs_input_grad[1]:
            order = torch.argsort(cols, stable=True)
            grad_table = F.embedding_bag(
                rows[order],
                grad.contiguous(),
                bag_offsets(cols[order], ctx.n_table),
                mode="sum",
                per_sample_weights=vals[order],
            )
        return grad, grad_table, None, None, None


@functools.cache
def _topk_groups(n: int, k: int) -> int:
    """Group size c for `row_topk` over n columns (1: no grouping, plain topk is as cheap)."""
    best, cost = 1, n
    for c in (2, 4, 8, 16, 32):
        # Groups must tile the row and outnumber k, or there is nothing to prune.
        if n % c == 0 and n // c > k and n // c + k * c < cost:
            best, cost = c, n // c + k * c
    return best if cost <= n // 2 else 1


def row_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row of `pre` (B × n): (values, column indices), each row
    ordered by column (the order the sparse decoder wants).

    The same entries as `pre.topk(k, dim=1)` (up to exact ties). On CPU float32 the native
    kernel in sae/_topk.c does it (see sae/_native.py); otherwise torch, as follows.
    torch.topk runs a quickselect per row whose branches depend on the data: on fresh data,
    as every monitor decision is, mispredicted branches make it cost more than the SAE's
    encoder matmul (~4× its cost on a re-used tensor, so micro-benchmarks that repeat one
    input hide it). So split each row into n/c groups of c columns and keep the k
    groups with the largest maxima: every top-k entry lies in one of them (a group whose max
    is not among the k largest maxima is outranked entirely by those k maxima). Then select
    among those k·c candidates: ~n/c + k·c entries go through quickselect instead of n.
    Group j is the columns j, j + n/c, j + 2n/c, ...: its maxima are then an elementwise max
    of c contiguous slices, much cheaper than a max over c adjacent columns.

    Args:
        pre: (B × n) contiguous tensor.
        k: entries per row, 1 <= k <= n.

    Returns:
        values (B × k) and their column indices into `pre` (B × k, int64).
    """
    found = native_row_topk(pre, k)
    if found is not None:
        return found
    B, n = pre.shape
    c = _topk_groups(n, k)
    if c == 1:
        cols = pre.topk(k, dim=1, sorted=False).indices.sort(dim=1).values
        return pre.gather(1, cols), cols
    g = n // c
    top = pre.view(B, c, g).amax(1).topk(k, dim=1, sorted=False).indices  # (B, k) group ids
    cand = (top.unsqueeze(2) + torch.arange(0, n, g, device=pre.device)).view(B, k * c)
    j = pre.gather(1, cand).topk(k, dim=1, sorted=False).indices
    cols = cand.gather(1, j).sort(dim=1).values
    return pre.gather(1, cols), cols


class GatherPreacts(torch.autograd.Function):
    """Pre-activations `(xn[rows] - b_dec) . W[cols] + b[cols]`, already computed, with a sparse backward.

    forward(xn, W, b, b_dec, rows, cols, selected) returns `selected` (computed under no_grad
    from the dense pre-activations, so the forward costs nothing extra); backward computes the
    gradients touching only the selected (row, col) pairs. The gradient of b_dec needs no
    (batch x d) intermediate: it is minus the column sums of G times W, i.e. -grad_b @ W.
    """

    @staticmethod
    def forward(ctx, xn, W, b, b_dec, rows, cols, selected):  # type: ignore[override]
        """Save what backward needs and pass the selected pre-activations through."""
        ctx.save_for_backward(xn, W, b_dec, rows, cols)
        ctx.n_b = b.shape[0]
        return selected.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        """Sparse gradients: grad_xn = G W, grad_W = G^T (xn - b_dec), grad_b = column sums of G."""
        xn, W, b_dec, rows, cols = ctx.saved_tensors
        grad_xn = grad_W = grad_b = grad_b_dec = None
        grad = grad.contiguous()
        col_sums = grad.new_zeros(ctx.n_b).index_add_(0, cols, grad)
        if ctx.needs_input_grad[0]:
            order = torch.argsort(rows, stable=True)
            grad_xn = bag_sum(rows[order], cols[order], grad[order], W, xn.shape[0])
        if ctx.needs_input_grad[1]:
            # Transpose trick: bags are latents, the table is the batch of centred inputs.
            order = torch.argsort(cols, stable=True)
            grad_W = bag_sum(cols[order], rows[order], grad[order], xn - b_dec, W.shape[0])
        if ctx.needs_input_grad[2]:
            grad_b = col_sums
        if ctx.needs_input_grad[3]:
            grad_b_dec = -(col_sums @ W)
        return grad_xn, grad_W, grad_b, grad_b_dec, None, None, None


def prefix_increments(
    rows: torch.Tensor,
    cols: torch.Tensor,
    vals: torch.Tensor,
    table: torch.Tensor,
    bounds: torch.Tensor,
    n_rows: int,
) -> torch.Tensor:
    """Per-row sums over each prefix bucket: out[r, g] = sum of vals * table[cols] for cols in
    [bounds[g-1], bounds[g]) (bounds[-1] = 0), as an (n_rows, len(bounds), d) tensor.

    Entries must be ordered by row, then by col, so every (row, bucket) bag is contiguous and
    one embedding_bag call (one backward) serves all prefixes. cumsum over dim 1 gives the
    nested prefix reconstructions.
    """
    n_buckets = bounds.numel()
    bucket = torch.bucketize(cols, bounds, right=True)
    out = bag_sum(rows * n_buckets + bucket, cols, vals, table, n_rows * n_buckets)
    return out.view(n_rows, n_buckets, table.shape[1])


class NestedResidualLoss(torch.autograd.Function):
    """Squared norms of the nested reconstructions' residuals, one per prefix, in few passes.

    forward(inc, e0, denom) with inc (batch, buckets, d) from `prefix_increments` and e0 = x_n −
    b_dec returns (nmse (buckets,), residual of the full reconstruction (batch, d), not
    differentiable): e_p = e0 − inc[:, 0] − ... − inc[:, p] and nmse_p = ||e_p||² / denom.
    Autograd through per-prefix slices, squares and sums would run about forty (batch × d)
    passes and stack the slices' gradients anew; this backward builds the gradient of inc in
    place as a running sum: grad inc[:, q] = −Σ_{p ≥ q} (2 g_p / denom) e_p. denom is a
    constant of the batch (it depends on the inputs only), so it gets no gradient.
    """

    @staticmethod
    def forward(ctx, inc, e0, denom):  # type: ignore[override]
        """Residuals prefix by prefix; norms as dot products (no squared temporaries)."""
        residuals, e = [], e0
        for p in range(inc.shape[1]):
            e = e - inc[:, p]
            residuals.append(e)
        flat = [r.reshape(-1) for r in residuals]
        nmse = torch.stack([torch.dot(f, f) for f in flat]) / denom
        ctx.save_for_backward(*residuals)
        ctx.denom = float(denom)
        ctx.mark_non_differentiable(e)
        return nmse, e

    @staticmethod
    def backward(ctx, grad_nmse, _grad_resid):  # type: ignore[override]
        """Gradients of inc (filled in place) and e0 (the running sum at the end)."""
        residuals = ctx.saved_tensors
        coef = (2.0 * grad_nmse / ctx.denom).tolist()
        P = len(residuals)
        grad_inc = residuals[0].new_empty(residuals[0].shape[0], P, residuals[0].shape[1])
        acc = residuals[-1] * coef[-1]
        torch.neg(acc, out=grad_inc[:, P - 1])
        for p in range(P - 2, -1, -1):
            acc.add_(residuals[p], alpha=coef[p])
            torch.neg(acc, out=grad_inc[:, p])
        return grad_inc, acc, None
