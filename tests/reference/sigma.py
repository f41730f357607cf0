"""PyTorch reference for the `mtrec-sigma` backbone: writes crates/mtrec-sigma/tests/fixtures/parity.safetensors.

A plain-PyTorch transcription of SIGMA (`ziwliu-cityu/SIMGA` @018d73a, `model/gated_mamba.py`) with
the Mamba mixer of `mamba_ssm/modules/mamba_simple.py` (its slow path and `selective_scan_ref`:
mamba_ssm itself needs CUDA). Only the CTR adaptation of `crates/mtrec-sigma` is added: optional
category embedding, zero padding token, read-out at max(len, 1) - 1, features z = h * e_target and
a Linear(d, 2 * 10) quantile head. Parameter names equal the Rust VarMap's.

Three variants share one input batch (B=4, L=8 so the flip covers L-5=3 positions, lengths 0, 1, 5, 8):
  io.*  item-only tokens, d=8, 1 layer, official flip
  ic.*  item+category tokens (4+4), 1 layer, official flip
  ic2.* item+category tokens, 2 layers (residual path), length-aware flip
Weights are drawn in float32 (well away from the tiny official init so every path matters) and
saved; expected outputs are computed in float64 from exactly those weights.

Run from the repository root:  python3 tests/reference/sigma.py
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file
from torch import nn

OUT = "crates/mtrec-sigma/tests/fixtures/parity.safetensors"
N_ITEMS, N_CATS = 50, 6  # vocab sizes (largest id + 1); id 0 = padding
D, D_STATE, D_CONV, EXPAND, FLIP_KEEP, QUANTILES = 8, 4, 4, 2, 5, 10


def selective_scan_ref(u, delta, A, B, C, D_, z, delta_bias):
    """mamba_ssm selective_scan_ref semantics. u, delta, z: [b, di, l]; A: [di, n]; B, C: [b, n, l]."""
    delta = F.softplus(delta + delta_bias[..., None])
    b, di, l = u.shape
    x = u.new_zeros(b, di, A.shape[1])
    ys = []
    for t in range(l):
        dA = torch.exp(delta[:, :, t, None] * A)
        x = dA * x + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, t]))
    y = torch.stack(ys, dim=2)
    y = y + u * D_[None, :, None]
    return y * F.silu(z)


class Mamba(nn.Module):
    def __init__(self, d_model, d_state, d_conv, expand):
        super().__init__()
        self.d_inner = expand * d_model
        self.d_state = d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, h):
        _, L, _ = h.shape
        xz = self.in_proj(h).transpose(1, 2)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :L])
        x_dbl = self.x_proj(x.transpose(1, 2))
        dt, Bm, Cm = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = self.dt_proj.weight @ dt.transpose(1, 2)
        A = -torch.exp(self.A_log)
        y = selective_scan_ref(x, dt, A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D, z, self.dt_proj.bias)
        return self.out_proj(y.transpose(1, 2))


class GMambaBlock(nn.Module):
    def __init__(self, d_model, d_state, d_conv, expand, flip_keep=FLIP_KEEP):
        super().__init__()
        self.flip_keep = flip_keep
        self.combining_weights = nn.Parameter(torch.tensor([0.1, 0.1, 0.8], dtype=torch.float32))
        self.dense1 = nn.Linear(d_model, d_model)
        self.dense2 = nn.Linear(d_model, d_model)
        self.projection = nn.Linear(d_model, d_model)
        self.mamba = Mamba(d_model, d_state, d_conv, expand)
        self.gru = nn.GRU(d_model, d_model, num_layers=1, bias=False, batch_first=True)
        self.selective_gate_sig = nn.Sequential(nn.Sigmoid(), nn.Linear(d_model, d_model))
        self.selective_gate_si = nn.Sequential(nn.SiLU(), nn.Linear(d_model, d_model))
        self.selective_gate = nn.Sequential(nn.Dropout(0.2))
        self.conv1d = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1)

    def forward(self, x, perm):
        h1 = self.dense1(x)
        g1 = self.conv1d(x.transpose(1, 2)).transpose(1, 2)
        if perm is None:  # official: flip the first L - flip_keep positions of every row
            k = x.shape[1] - self.flip_keep
            flipped = x.clone()
            flipped[:, :k, :] = x[:, :k, :].flip(dims=[1])
        else:  # length-aware option: per-row permutation of the time axis
            flipped = torch.gather(x, 1, perm[..., None].expand(-1, -1, x.shape[2]))
        h2 = self.dense2(flipped) + flipped
        mamba_output_f = self.mamba(flipped)
        mamba_output = self.mamba(x)
        h1 = x + h1
        h1 = self.selective_gate_si(h1) + self.selective_gate_sig(h1)
        h1 = self.selective_gate(h1)
        h2 = self.selective_gate_si(h2) + self.selective_gate_sig(h1)
        h2 = self.selective_gate(h2)
        mamba_output = mamba_output * h1 + mamba_output
        mamba_output_f = mamba_output_f * h2 + mamba_output_f
        gru_output, _ = self.gru(g1)
        w = self.combining_weights
        combined = w[2] * mamba_output + w[1] * mamba_output_f + w[0] * gru_output
        return self.projection(combined)


class FeedForward(nn.Module):
    def __init__(self, d_model, inner_size, dropout):
        super().__init__()
        self.w_1 = nn.Linear(d_model, inner_size)
        self.w_2 = nn.Linear(inner_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)

    def forward(self, x):
        h = self.dropout(F.gelu(self.w_1(x)))
        h = self.dropout(self.w_2(h))
        return self.LayerNorm(h + x)


class SIGMALayers(nn.Module):
    def __init__(
        self, d_model, num_layers, dropout=0.2, d_state=D_STATE, d_conv=D_CONV, expand=EXPAND, flip_keep=FLIP_KEEP
    ):
        super().__init__()
        self.num_layers = num_layers
        self.gmamba = GMambaBlock(d_model, d_state, d_conv, expand, flip_keep)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(d_model, eps=1e-12)
        self.ffn = FeedForward(d_model, 4 * d_model, dropout)

    def forward(self, x, perm):
        h = self.gmamba(x, perm)
        if self.num_layers == 1:
            h = self.LayerNorm(self.dropout(h))
        else:
            h = self.LayerNorm(self.dropout(h) + x)
        return self.ffn(h)


class SigmaCtr(nn.Module):
    def __init__(
        self, tokens, num_layers, length_aware, n_items=N_ITEMS, n_cats=N_CATS, d=D,
        d_state=D_STATE, d_conv=D_CONV, expand=EXPAND, flip_keep=FLIP_KEEP,
    ):
        super().__init__()
        self.tokens, self.length_aware, self.flip_keep = tokens, length_aware, flip_keep
        if tokens == "item_only":
            self.item_embedding = nn.Embedding(n_items, d, padding_idx=0)
        else:
            self.item_embedding = nn.Embedding(n_items, d // 2, padding_idx=0)
            self.cat_embedding = nn.Embedding(n_cats, d // 2, padding_idx=0)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)
        self.dropout = nn.Dropout(0.2)
        self.mamba_layers = nn.ModuleList(
            [SIGMALayers(d, num_layers, 0.2, d_state, d_conv, expand, flip_keep) for _ in range(num_layers)]
        )
        self.head = nn.Linear(d, 2 * QUANTILES)

    def embed(self, items, cats):
        e = self.item_embedding(items)
        if self.tokens == "item_category":
            e = torch.cat([e, self.cat_embedding(cats)], dim=-1)
        return e

    def forward(self, hist_items, hist_cats, lengths, target_items, target_cats):
        b, l = hist_items.shape
        perm = None
        if self.length_aware:
            rows = []
            for n in lengths.tolist():
                span = max(min(n, l) - self.flip_keep, 0)
                rows.append([span - 1 - t if t < span else t for t in range(l)])
            perm = torch.tensor(rows, dtype=torch.int64, device=hist_items.device)
        x = self.LayerNorm(self.dropout(self.embed(hist_items, hist_cats)))
        for layer in self.mamba_layers:
            x = layer(x, perm)
        idx = lengths.clamp(min=1) - 1
        h = x[torch.arange(b, device=x.device), idx]
        z = h * self.embed(target_items, target_cats)
        return z, self.head(z).reshape(b, 2, QUANTILES)


def randomise(model, gen):
    """Redraws every parameter at a scale where all paths contribute (padding rows stay zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("A_log"):
                p.copy_(torch.log(torch.arange(1, p.shape[1] + 1, dtype=torch.float32)).repeat(p.shape[0], 1)
                        + 0.3 * noise)
            elif name.endswith(".D") or name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith("combining_weights"):
                p.copy_(torch.tensor([0.1, 0.1, 0.8]) + 0.2 * noise)
            else:
                p.copy_(0.3 * noise)
            if name.endswith("embedding.weight"):
                p[0].zero_()


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20250101)
    b, l = 4, 8
    lengths = torch.tensor([0, 1, 5, 8], dtype=torch.int64)
    hist_items = torch.zeros(b, l, dtype=torch.int64)
    hist_cats = torch.zeros(b, l, dtype=torch.int64)
    for row, n in enumerate(lengths.tolist()):
        hist_items[row, :n] = torch.randint(1, N_ITEMS, (n,), generator=gen)
        hist_cats[row, :n] = torch.randint(1, N_CATS, (n,), generator=gen)
    target_items = torch.randint(1, N_ITEMS, (b,), generator=gen)
    target_cats = torch.randint(1, N_CATS, (b,), generator=gen)

    out = {
        "input.hist_items": hist_items.numpy().astype(np.uint32),
        "input.hist_cats": hist_cats.numpy().astype(np.uint32),
        "input.lengths": lengths.numpy().astype(np.uint32),
        "input.target_items": target_items.numpy().astype(np.uint32),
        "input.target_cats": target_cats.numpy().astype(np.uint32),
    }
    for prefix, tokens, layers, length_aware in [
        ("io", "item_only", 1, False),
        ("ic", "item_category", 1, False),
        ("ic2", "item_category", 2, True),
    ]:
        model = SigmaCtr(tokens, layers, length_aware)
        randomise(model, gen)
        model.eval()
        for name, p in model.state_dict().items():
            out[f"{prefix}.{name}"] = p.detach().numpy().astype(np.float32).copy()
        model = model.double()
        with torch.no_grad():
            z, logits = model(hist_items, hist_cats, lengths, target_items, target_cats)
        out[f"{prefix}.expected.features"] = z.numpy().astype(np.float64)
        out[f"{prefix}.expected.logits"] = logits.numpy().astype(np.float64)
        print(prefix, "features[1]", z[1].numpy().round(4))

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # One metadata entry: several would be written in an unstable order.
    save_file(out, OUT, metadata={"generator": f"tests/reference/sigma.py (torch {torch.__version__})"})
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
