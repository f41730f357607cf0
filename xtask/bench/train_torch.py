#!/usr/bin/env python3
"""Training throughput of MTRec's eight backbones in PyTorch, the torch half of
`cargo xtask bench-train` (which runs this script once per model and reads the JSON object it
prints last).

The models are the parity references of tests/reference/ (ctr_models.py, dien.py, seq_models.py,
sigma.py), imported, at the DEFAULT (official) sizes of the Rust crates (experiments/models/*.yaml)
and Electronics-sized vocabularies, each with a one-logit CTR head Linear(feature_dim, 1). One step
is what the Rust trainer does: forward (training mode) + BCE with logits (+ DIEN's auxiliary loss)
+ backward + Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8, dense gradients). `--batches` is the
safetensors file xtask writes (the very batches candle trained on); without it the script draws
its own batches with the same distribution (lengths uniform in 1..=min(cap, model cap)).

Where the references differ from the Rust models (all small next to the step cost):
  * SASRec and LinRec: the references' dropout (0.5 and 0.2 in training, as the Rust defaults)
    draws torch's own masks; SASRec derives its attention masks from the features (the official
    way) instead of the batch mask;
  * DIEN: the auxiliary loss runs the auxiliary network on all B x (T-1) slots (the reference's
    dense mean); the Rust model feeds it only the real pairs;
  * SIGMA: the reference also computes its Quantile(10) head (B x 64 x 20, not in the loss, not in
    the optimiser, not counted); the CTR head sits on the same features;
  * embedding row 0 is an ordinary row in the CTR references (Rust masks the padding output).
The parameter counts of both sides are printed; xtask warns when they differ.

Usage: python3 xtask/bench/train_torch.py --model din [--batches FILE] [--batch 1024] [--steps 50]
           [--warmup 2] [--max-seconds 30] [--threads 2] [--history-cap 100] [--seed 1234]
           [--device cpu|cuda|cuda:N]  (`loss.item()` ends each step, so GPU steps are timed whole)
"""

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REF = pathlib.Path(__file__).resolve().parents[2] / "tests" / "reference"
sys.path.insert(0, str(REF))
import ctr_models  # noqa: E402
import dien  # noqa: E402
import seq_models  # noqa: E402
import sigma  # noqa: E402

VOCAB = (192_404, 63_002, 802)  # Electronics: users, items, categories (+ padding id 0)
N_BATCHES = 8

# The Rust defaults (experiments/models/<name>.yaml).
E = 18
FCN = (200, 80)
ATT = (80, 40)
AUX = (100, 50)
SASREC = {"hidden_units": 50, "num_blocks": 2, "num_heads": 1, "maxlen": 50}
LINREC = {"hidden_size": 128, "inner_size": 256, "n_layers": 2, "n_heads": 8, "max_seq_length": 50}
SIGMA = {"d": 64, "d_state": 32, "d_conv": 4, "expand": 2, "flip_keep": 5}

# (max_history, fixed width?, right-aligned?) = each backbone's layout().
LAYOUTS = {
    "widedeep": (100, False, False),
    "pnn": (100, False, False),
    "deepfm": (100, False, False),
    "din": (100, False, False),
    "dien": (100, False, False),
    "sasrec": (SASREC["maxlen"], True, True),
    "linrec": (LINREC["max_seq_length"], True, False),
    "sigma": (50, True, False),
}


class Ctr(nn.Module):
    """A reference backbone with a one-logit head; `forward` returns (logits [B], aux loss or None)."""

    def __init__(self, name, vocab):
        super().__init__()
        self.name = name
        if name == "widedeep":
            self.backbone = ctr_models.WideDeep(vocab, E, FCN)
        elif name == "pnn":
            self.backbone = ctr_models.Pnn(vocab, E, FCN)
        elif name == "deepfm":
            self.backbone = ctr_models.DeepFm(vocab, E, FCN)
        elif name == "din":
            self.backbone = ctr_models.Din(vocab, E, FCN, ATT)
        elif name == "dien":
            self.backbone = dien.Dien(vocab, E, 36, FCN, ATT, AUX)
        elif name == "sasrec":
            self.backbone = seq_models.SasRec(SASREC, vocab, dropout=0.5)
        elif name == "linrec":
            # n_heads 8 divides hidden_size 128: the Rust heads rule keeps 8.
            self.backbone = seq_models.LinRec(LINREC, LINREC["n_heads"], vocab, dropout=0.2)
        elif name == "sigma":
            self.backbone = sigma.SigmaCtr("item_only", 1, False, n_items=vocab[1], n_cats=vocab[2], **SIGMA)
            self.backbone.feature_dim = SIGMA["d"]
        else:
            raise SystemExit(f"unknown model {name!r} (known: {', '.join(LAYOUTS)})")
        self.head = nn.Linear(self.backbone.feature_dim, 1)

    def forward(self, b):
        aux = None
        offset = None
        if self.name in ("widedeep", "pnn", "deepfm", "din"):
            features, offset = self.backbone(b)
        elif self.name == "dien":
            features, _ = self.backbone(b)
            aux = self.backbone.last["aux_loss"]
        elif self.name in ("sasrec", "linrec"):
            _h, features = self.backbone(b)
        else:
            features, _quantiles = self.backbone(
                b["hist_items"], b["hist_cats"], b["lengths"], b["target_items"], b["target_cats"]
            )
        logits = self.head(features).squeeze(-1)
        if offset is not None:
            logits = logits + offset
        return logits, aux

    def trained_parameters(self):
        """Every parameter but SIGMA's unused Quantile head."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.head.")]


COLUMNS = (
    "users", "hist_items", "hist_cats", "hist_neg_items", "hist_neg_cats",
    "mask", "lengths", "target_items", "target_cats", "labels",
)


def to_torch(cols):
    out = {}
    for k, v in cols.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        out[k] = t.float() if k in ("mask", "labels") else t.long()
    return out


def load_batches(path):
    from safetensors.numpy import load_file

    raw = load_file(path)
    n = len({k.split(".", 1)[0] for k in raw})
    return [to_torch({c: raw[f"{i}.{c}"] for c in COLUMNS}) for i in range(n)]


def make_batches(name, batch, history_cap, seed):
    """The xtask's distribution, drawn with numpy (when no batch file is given)."""
    users, items, cats = VOCAB
    cap, fixed, right = LAYOUTS[name]
    max_len = max(1, min(history_cap, cap))
    rng = np.random.default_rng(seed)
    cat_of = rng.integers(1, cats, items, dtype=np.int64)
    cat_of[0] = 0
    out = []
    for _ in range(N_BATCHES):
        lengths = rng.integers(1, max_len + 1, batch)
        width = cap if fixed else int(lengths.max())
        cols = np.arange(width)[None, :]
        start = (width - lengths)[:, None] if right else np.zeros((batch, 1), dtype=np.int64)
        real = (cols >= start) & (cols < start + lengths[:, None])
        hist = rng.integers(1, items, (batch, width)) * real
        neg = rng.integers(1, items, (batch, width)) * real
        target = rng.integers(1, items, batch)
        out.append(to_torch({
            "users": rng.integers(1, users, batch),
            "hist_items": hist,
            "hist_cats": cat_of[hist],
            "hist_neg_items": neg,
            "hist_neg_cats": cat_of[neg],
            "mask": real.astype(np.float32),
            "lengths": lengths,
            "target_items": target,
            "target_cats": cat_of[target],
            "labels": rng.integers(0, 2, batch).astype(np.float32),
        }))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--batches", help="safetensors file of batches written by cargo xtask bench-train")
    ap.add_argument("--batch", type=int, default=1024, help="batch size (without --batches)")
    ap.add_argument("--history-cap", type=int, default=100, help="(without --batches)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    a = ap.parse_args()
    device = torch.device(a.device)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    batches = load_batches(a.batches) if a.batches else make_batches(a.model, a.batch, a.history_cap, a.seed)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    model = Ctr(a.model, VOCAB).to(device)
    model.train()
    params = model.trained_parameters()
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)

    def step(i):
        b = batches[i % len(batches)]
        logits, aux = model(b)
        loss = F.binary_cross_entropy_with_logits(logits, b["labels"])
        if aux is not None:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for i in range(a.warmup):
        step(i)
    times, loss = [], float("nan")
    start = time.perf_counter()
    for i in range(a.steps):
        t = time.perf_counter()
        loss = step(a.warmup + i)
        times.append(time.perf_counter() - t)
        if not np.isfinite(loss):
            raise SystemExit(f"non-finite loss {loss} at step {a.warmup + i}")
        if a.max_seconds > 0 and len(times) >= min(a.steps, 2) and time.perf_counter() - start >= a.max_seconds:
            break
    seconds = time.perf_counter() - start
    bsz = batches[0]["users"].shape[0]
    print(json.dumps({
        "model": a.model,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "params": sum(p.numel() for p in params),
        "batch": bsz,
        "widths": [int(b["hist_items"].shape[1]) for b in batches],
        "steps": len(times),
        "seconds": seconds,
        "samples_per_s": bsz * len(times) / seconds,
        "ms_per_step": 1e3 * seconds / len(times),
        "median_ms": 1e3 * float(np.median(times)),
        "last_loss": loss,
    }))


if __name__ == "__main__":
    main()
