"""Matryoshka top-k sparse autoencoder (Bussmann et al. 2025; top-k and AuxK from Gao et al. 2024).

x (d_in) -> normalise -> ReLU(top-k(W_enc (x_n - b_dec) + b_enc)) -> z (n_latents, k nonzero)
x_n_hat_{1:m} = b_dec + sum over active latents j < m of z_j W_dec[j]     for each prefix m
loss = sum_m w_m ||x_n - x_n_hat_{1:m}||^2 / ||x_n - mean||^2  +  aux_coeff * AuxK

Nested prefixes force the first latents to carry the coarsest, most reusable features, so a
coarse prefix alone still reconstructs (steering through prefix 64 keeps fine detail intact).
Decoder rows are kept at unit norm so latent values are comparable across features.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sae._sparse import GatherPreacts, NestedResidualLoss, bag_sum, prefix_increments, row_topk
from sae.config import SAEConfig
from storage import write_json, write_safetensors

WEIGHTS_FILE = "sae.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


class SparseCode(NamedTuple):
    """Active latents as a flat COO list, ordered by row and then by column (AuxK codes: by row)."""

    rows: torch.Tensor
    cols: torch.Tensor
    vals: torch.Tensor
    batch_size: int


def geometric_median(x: torch.Tensor, iters: int = 50, eps: float = 1e-6) -> torch.Tensor:
    """Weiszfeld estimate of the geometric median of the rows of `x` (robust to outliers)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < eps * (1 + y.norm()):
            return y_new
        y = y_new
    return y


class MatryoshkaSAE(nn.Module):
    """Matryoshka top-k SAE. See the module docstring for the model and loss."""

    def __init__(self, config: SAEConfig) -> None:
        """Build an SAE with random unit-norm decoder rows and the encoder tied to them."""
        super().__init__()
        self.config = config
        n, d = config.n_latents, config.d_in
        # Encoder stored (n_latents, d_in) like the decoder: rows per latent, which is the layout
        # the sparse backward (bag sums over latent rows) reads.
        self.W_enc = nn.Parameter(torch.empty(n, d))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, d))
        self.b_dec = nn.Parameter(torch.zeros(d))
        self.register_buffer("x_mean", torch.zeros(d))
        self.register_buffer("x_scale", torch.ones(()))
        # BatchTopK inference threshold; negative = not learned yet (fall back to per-sample top-k).
        self.register_buffer("threshold", torch.full((), -1.0))
        self.register_buffer("steps_since_fired", torch.zeros(n, dtype=torch.long))
        self.register_buffer("prefix_bounds", torch.tensor(config.prefixes, dtype=torch.long))
        self.reset_parameters()

    @property
    def d_in(self) -> int:
        """Input width (the residual stream's d)."""
        return self.config.d_in

    @property
    def n_latents(self) -> int:
        """Dictionary size."""
        return self.config.n_latents

    # ----------------------------------------------------------------- initialisation
    def reset_parameters(self) -> None:
        """Random unit-norm decoder rows; encoder = decoder (transpose init, Gao et al.)."""
        with torch.no_grad():
            self.W_dec.normal_()
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))
            self.W_enc.copy_(self.W_dec)
            self.b_enc.zero_()
            self.b_dec.zero_()

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, median: bool = True) -> None:
        """Fit input normalisation (mean, scale) and b_dec from a sample of activations.

        The scale makes the mean squared norm of normalised inputs equal d_in, so one
        learning rate suits any model width. b_dec starts at the geometric median (or mean)
        of the normalised sample.
        """
        x = self._check_input(x).float()
        self.x_mean.copy_(x.mean(0))
        var = ((x - self.x_mean) ** 2).sum(1).mean() / self.config.d_in
        self.x_scale.fill_(float(var.sqrt()) if var > 0 else 1.0)
        xn = self._normalize(x)
        self.b_dec.copy_(geometric_median(xn) if median else xn.mean(0))

    # ----------------------------------------------------------------- helpers
    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a (batch, d_in) input (a single vector is promoted to a batch of one)."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.config.d_in:
            raise ValueError(
                f"expected activations of shape (batch, {self.config.d_in}), got {tuple(x.shape)}"
            )
        return x.to(self.W_enc.dtype)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.x_mean) / self.x_scale

    def _denormalize(self, xn: torch.Tensor) -> torch.Tensor:
        return xn * self.x_scale + self.x_mean

    @property
    def dead_mask(self) -> torch.Tensor:
        """Latents that have not fired for more than `dead_steps_threshold` training steps."""
        return self.steps_since_fired > self.config.dead_steps_threshold

    # ----------------------------------------------------------------- encoding
    def _select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Active (rows, cols, pre-activations) from dense pre-activations, ordered by row then
        column (the order `prefix_increments` needs)."""
        B, n = pre.shape
        k = self.config.k
        if self.config.batch_topk and self.training:
            flat = pre.relu().flatten()
            idx = flat.topk(min(k * B, flat.numel()), sorted=False).indices.sort().values
            return idx // n, idx % n, pre.flatten()[idx]
        if self.config.batch_topk and self.threshold >= 0:
            rows, cols = (pre > self.threshold).nonzero(as_tuple=True)
            return rows, cols, pre[rows, cols]
        vals, cols = row_topk(pre, k)
        rows = torch.arange(B, device=pre.device).repeat_interleave(k)
        return rows, cols.flatten(), vals.flatten()

    def _encode_normalized(self, xn: torch.Tensor, aux: bool = False):
        """Sparse code of normalised inputs; with `aux`, also the AuxK code over dead latents."""
        with torch.no_grad():
            pre = F.linear(xn - self.b_dec, self.W_enc, self.b_enc)
            rows, cols, selected = self._select(pre)
            n_main = rows.numel()
            if aux:
                dead = self.dead_mask
                n_aux = min(self.config.aux_k, int(dead.sum()))
                if n_aux > 0:
                    masked = pre.masked_fill(~dead, float("-inf"))
                    a_cols = masked.topk(n_aux, dim=1, sorted=False).indices.flatten()
                    a_rows = torch.arange(xn.shape[0], device=xn.device).repeat_interleave(n_aux)
                    rows, cols = torch.cat([rows, a_rows]), torch.cat([cols, a_cols])
                    selected = torch.cat([selected, pre[a_rows, a_cols]])
        # One gather for main + aux so the sparse backward runs once.
        vals = GatherPreacts.apply(
            xn, self.W_enc, self.b_enc, self.b_dec, rows, cols, selected
        ).relu()
        main = SparseCode(rows[:n_main], cols[:n_main], vals[:n_main], xn.shape[0])
        if not aux:
            return main, None
        aux_code = SparseCode(rows[n_main:], cols[n_main:], vals[n_main:], xn.shape[0])
        return main, (aux_code if aux_code.rows.numel() else None)

    def encode_sparse(self, x: torch.Tensor) -> SparseCode:
        """Active latents of raw activations `x` (batch, d_in) as a flat COO `SparseCode`."""
        return self._encode_normalized(self._normalize(self._check_input(x)))[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (batch, n_latents), dense: k selected per row (top-k), ReLU-ed values.

        A selected latent whose pre-activation is <= 0 stays 0, so a row can rarely have fewer
        than k nonzeros; BatchTopK at inference uses the learned threshold instead.
        """
        code = self.encode_sparse(x)
        z = code.vals.new_zeros(code.batch_size, self.config.n_latents)
        return z.index_put((code.rows, code.cols), code.vals)

    # ----------------------------------------------------------------- decoding
    def _decode_prefixes(self, code: SparseCode) -> list[torch.Tensor]:
        """Normalised reconstructions, one (batch, d_in) tensor per prefix.

        One bag sum per (sample, prefix bucket), accumulated bucket by bucket (explicit adds:
        cumsum over the middle dim of (batch, buckets, d) is several times slower on CPU).
        """
        inc = prefix_increments(
            code.rows, code.cols, code.vals, self.W_dec, self.prefix_bounds, code.batch_size
        )
        out, acc = [], self.b_dec
        for part in inc.unbind(1):  # unbind: one backward op, not a zero-filled grad per slice
            acc = acc + part
            out.append(acc)
        return out

    def _dense_to_code(self, z: torch.Tensor, m: int | None = None) -> SparseCode:
        if z.ndim == 1:
            z = z[None]
        if z.ndim != 2 or z.shape[1] != self.config.n_latents:
            raise ValueError(
                f"expected latents of shape (batch, {self.config.n_latents}), got {tuple(z.shape)}"
            )
        if m is not None:
            z = z[:, :m]
        rows, cols = z.nonzero(as_tuple=True)
        return SparseCode(rows, cols, z[rows, cols], z.shape[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct raw activations from latents (batch, n_latents) using every latent."""
        code = self._dense_to_code(z)
        return self._denormalize(
            self.b_dec + bag_sum(code.rows, code.cols, code.vals, self.W_dec, code.batch_size)
        )

    def decode_prefix(self, z: torch.Tensor, m: int) -> torch.Tensor:
        """Reconstruct raw activations using only the first `m` latents (1 <= m <= n_latents)."""
        if (
            isinstance(m, bool)
            or not isinstance(m, numbers.Integral)
            or not 1 <= m <= self.config.n_latents
        ):
            raise ValueError(f"prefix m must be an int in [1, {self.config.n_latents}], got {m!r}")
        m = int(m)
        code = self._dense_to_code(z, m)
        return self._denormalize(
            self.b_dec + bag_sum(code.rows, code.cols, code.vals, self.W_dec, code.batch_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full reconstruction of raw activations `x`."""
        code = self.encode_sparse(x)
        return self._denormalize(
            self.b_dec + bag_sum(code.rows, code.cols, code.vals, self.W_dec, code.batch_size)
        )

    def prefix_reconstructions(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw-space reconstructions of `x`, one per prefix in `config.prefixes`."""
        code = self.encode_sparse(x)
        return [self._denormalize(r) for r in self._decode_prefixes(code)]

    def reconstruction_error(self, x: torch.Tensor, encode_dtype: torch.dtype | None = None) -> torch.Tensor:  # fmt: skip
        """Per-sample normalised error ||x_n - x_n_hat||^2 / d_in in normalised units.

        Normalised inputs have mean squared norm d_in over the data the SAE was fitted on, so
        this is the sample's squared error relative to the average activation variance
        (about 1 - FVE for a typical sample). Used as the SARM anomaly score, once per agent
        decision, so the eval-mode path is lean: the same latents as `encode` (per-sample
        top-k, or the learned BatchTopK threshold), decoded by one embedding bag without the
        training path's COO bookkeeping; equal to it up to float summation order. `encode_dtype`
        (eval mode): the encoder's product, the one large one, in this dtype (torch.bfloat16 is
        several times faster with AMX or a GPU); decoding and the error stay in float32.
        """
        xn = self._normalize(self._check_input(x))
        xc = xn - self.b_dec
        pre = None if self.training else self._pre_activations(xc, encode_dtype)
        if self.training:  # BatchTopK selects over the whole batch while training
            code = self._encode_normalized(xn)[0]
            delta = bag_sum(code.rows, code.cols, code.vals, self.W_dec, code.batch_size)
        elif self.config.batch_topk and self.threshold >= 0:
            active = pre > self.threshold  # a variable number of latents per sample
            rows, cols = active.nonzero(as_tuple=True)
            counts = active.sum(1)
            # Values above a threshold >= 0 are positive: the ReLU leaves them as they are.
            delta = F.embedding_bag(cols, self.W_dec, counts.cumsum(0) - counts, mode="sum",
                                    per_sample_weights=pre[rows, cols])  # fmt: skip
        else:
            vals, cols = row_topk(pre, self.config.k)
            delta = F.embedding_bag(cols, self.W_dec, mode="sum", per_sample_weights=vals.relu())
        resid = xc - delta  # x_n - (b_dec + decoded latents)
        return (resid * resid).sum(1) / self.config.d_in

    def _pre_activations(self, xc: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        """Encoder pre-activations (float32), the product in `dtype` (its weight and bias cast once
        while they are unchanged)."""
        if dtype is None or dtype == self.W_enc.dtype:
            return F.linear(xc, self.W_enc, self.b_enc)
        key = (dtype, self.W_enc._version, self.b_enc._version, self.W_enc.data_ptr())
        if getattr(self, "_encoder_cast", (None,))[0] != key:
            self._encoder_cast = (key, self.W_enc.detach().to(dtype), self.b_enc.detach().to(dtype))
        return F.linear(xc.to(dtype), *self._encoder_cast[1:]).float()

    # ----------------------------------------------------------------- training
    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Matryoshka loss on a batch: (total, parts).

        parts: loss, nmse (full dictionary), fve, nmse_<m> per prefix, aux, l0, dead_frac.
        In training mode this also updates the dead-latent counters and the BatchTopK
        threshold, so call it exactly once per optimisation step.
        """
        xn = self._normalize(self._check_input(x))
        if xn.shape[0] < 2:
            raise ValueError(f"loss needs a batch of at least 2 samples, got {xn.shape[0]}")
        code, aux_code = self._encode_normalized(xn, aux=self.training)
        inc = prefix_increments(
            code.rows, code.cols, code.vals, self.W_dec, self.prefix_bounds, code.batch_size
        )
        # Normalising by the batch variance makes each term 1 - FVE: scale-free across models.
        denom = ((xn - xn.mean(0)) ** 2).sum().clamp_min(1e-12)
        nmses, resid = NestedResidualLoss.apply(inc, xn - self.b_dec, denom)
        weights = torch.tensor(self.config.prefix_weights, dtype=nmses.dtype, device=nmses.device)
        recon_loss = (weights * nmses).sum()
        aux_loss = xn.new_zeros(())
        if aux_code is not None:
            # AuxK: dead latents learn to explain what the live ones miss (Gao et al. 2024).
            aux_rec = bag_sum(aux_code.rows, aux_code.cols, aux_code.vals, self.W_dec, xn.shape[0])
            aux_den = ((resid - resid.mean(0)) ** 2).sum().clamp_min(1e-12)
            aux_loss = ((resid - aux_rec) ** 2).sum() / aux_den
        total = recon_loss + self.config.aux_coeff * aux_loss
        if self.training:
            self._update_stats(code)
        nm = nmses.detach().tolist()
        parts = {
            "loss": float(total.detach()),
            "nmse": nm[-1],
            "fve": 1.0 - nm[-1],
            "aux": float(aux_loss.detach()),
            "l0": float((code.vals > 0).sum()) / xn.shape[0],
            "dead_frac": float(self.dead_mask.float().mean()),
        }
        for m, e in zip(self.config.prefixes, nm, strict=True):
            parts[f"nmse_{m}"] = e
        return total, parts

    @torch.no_grad()
    def _update_stats(self, code: SparseCode) -> None:
        fired = torch.bincount(code.cols[code.vals > 0], minlength=self.config.n_latents) > 0
        self.steps_since_fired.add_(1).masked_fill_(fired, 0)
        if self.config.batch_topk:
            active = code.vals[code.vals > 0]
            if active.numel():
                t = float(active.min())
                mom = self.config.threshold_momentum
                new = t if self.threshold < 0 else mom * float(self.threshold) + (1 - mom) * t
                self.threshold.fill_(new)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient component parallel to each decoder row (keeps rows unit-norm)."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.sub_((g * w).sum(1, keepdim=True) * w)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Renormalise decoder rows to unit norm (after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write `sae.safetensors` and `config.json` (with `metadata`, e.g. model id, layer, d)."""
        directory = Path(directory)
        if metadata:
            self.config.metadata = {**self.config.metadata, **metadata}
        write_safetensors(directory / WEIGHTS_FILE, dict(self.state_dict()))
        # Config last: a directory with config.json has complete weights beside it.
        write_json(
            directory / CONFIG_FILE,
            {
                "format_version": FORMAT_VERSION,
                "class": type(self).__name__,
                **self.config.to_dict(),
            },
        )
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, expected_d_in: int | None = None, device: str = "cpu"
    ) -> MatryoshkaSAE:
        """Load a saved SAE; ValueError says which size or tensor mismatched.

        expected_d_in: the width of the activations you will feed it; a different d_in in the
        checkpoint is an error naming both sizes.
        """
        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"no SAE checkpoint file {p}")
        raw = json.loads(cfg_path.read_text())
        raw.pop("format_version", None)
        raw.pop("class", None)
        config = SAEConfig.from_dict(raw)
        if expected_d_in is not None and config.d_in != expected_d_in:
            raise ValueError(
                f"SAE checkpoint {directory} has d_in={config.d_in} but the activations have "
                f"d={expected_d_in}"
            )
        model = cls(config)
        try:
            tensors = load_file(str(w_path), device=device)
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"cannot read SAE weights {w_path}: {exc}") from exc
        expected = model.state_dict()
        problems = [f"missing tensor {k}" for k in expected if k not in tensors]
        problems += [f"unexpected tensor {k}" for k in tensors if k not in expected]
        problems += [
            f"{k}: checkpoint shape {tuple(tensors[k].shape)} vs config shape {tuple(v.shape)}"
            for k, v in expected.items()
            if k in tensors and tensors[k].shape != v.shape
        ]
        if problems:
            raise ValueError(
                f"SAE checkpoint {w_path} does not match its config: " + "; ".join(problems)
            )
        model.load_state_dict(tensors)
        return model.to(device)
