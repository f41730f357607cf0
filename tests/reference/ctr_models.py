#!/usr/bin/env python3
"""PyTorch references of the four DIEN-repository CTR backbones of MTRec (Wide&Deep, PNN, DeepFM,
DIN), written to match the Rust formulation in crates/mtrec-{widedeep,pnn,deepfm,din} exactly,
and the generator of their forward-parity fixtures.

The architectures follow specs/backbones.md §1-§2 (mouna99/dien `script/model.py`, `utils.py`,
`Dice.py`) with the Rust crates' documented deviations: embedding row 0 is a zero padding row,
history sums are masked, and the backbone stops before the final Linear(80, 2), which a head
(`head.*` for a Quantile(10) head, `ctr.head.*` for a one-logit CTR head) replaces. Wide&Deep's
wide part is returned as features next to the deep part (one head over the concatenation equals
the reference's sum of two linears). DeepFM's FM terms are a logit offset added to action P
(index 1) of the Q heads and to the CTR logit.

Module and parameter names equal the Rust VarMap names (`emb.mid.weight`, `fcn.fc0.weight`,
`att.mlp.out.bias`, ...); Linear weights are [out, in] on both sides.

Each fixture `crates/mtrec-<name>/tests/fixtures/parity.safetensors` holds
  * every parameter (float32), randomised so that no parameter sits at a trivial init value;
  * `input.*`: a batch of B = 6 samples, T = 5, left-aligned histories of lengths 5, 3, 0, 1, 4, 2
    (id 0 = padding), ids as int64, mask and labels as float32;
  * `expected.features` [B, D], `expected.quantile` [B, 2, 10], `expected.ctr` [B] and, for DeepFM,
    `expected.offset` [B], computed in float64 from the float32 weights;
  * `meta.*` (int64): `vocab` = [users, items, categories], `embedding_dim`, `hidden` and, for
    DIN, `attention_hidden` -- the configuration the Rust test builds the model with.

Run `python3 tests/reference/ctr_models.py` from anywhere (needs torch, safetensors, numpy).
"""

import math
import pathlib

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]

BN_EPS = 1e-3  # tf.layers.batch_normalization's epsilon: the BN quirk's constant scale
DICE_EPS = 1e-9  # script/Dice.py
FILL = -(2.0**32) + 1  # din_attention's padding score

VOCAB = (50, 60, 7)  # users, items, categories (largest id + 1; id 0 = padding)
E = 18  # official per-field embedding size
HIDDEN = (64, 32)  # build_fcn_net's (200, 80), shrunk to keep the fixtures small
ATT_HIDDEN = (32, 16)  # din_attention's (80, 40), shrunk likewise
LENGTHS = (5, 3, 0, 1, 4, 2)
QUANTILES = 10
ACTION_P = 1


# ----------------------------------------------------------------------------- layers


class FeatAffine(nn.Module):
    """The BN quirk: gamma * x / sqrt(1 + 1e-3) + beta."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x / math.sqrt(1.0 + BN_EPS) * self.gamma + self.beta


class PRelu(nn.Module):
    """max(x, 0) + alpha * min(x, 0), alpha per feature of the last dimension (init 0.1)."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):
        return torch.relu(x) + self.alpha * torch.clamp(x, max=0.0)


class Dice(nn.Module):
    """script/Dice.py: batch statistics over all axes but the last, alpha init 0."""

    def __init__(self, dim):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        mean = flat.mean(0, keepdim=True)
        centred = flat - mean
        var = (centred.square() + DICE_EPS).mean(0, keepdim=True)
        std = var.sqrt() + DICE_EPS
        p = torch.sigmoid(centred / std).reshape(x.shape)
        return x * (p + (1.0 - p) * self.alpha)


class Sigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


class Mlp(nn.Module):
    """fc{i} + act{i} per hidden layer, then an optional `out` layer (mtrec_nn::Mlp's names)."""

    def __init__(self, inp, hidden, act, output=None):
        super().__init__()
        self.n = len(hidden)
        for i, h in enumerate(hidden):
            setattr(self, f"fc{i}", nn.Linear(inp, h))
            setattr(self, f"act{i}", act(h))
            inp = h
        self.out = nn.Linear(inp, output) if output is not None else None

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, f"act{i}")(getattr(self, f"fc{i}")(x))
        return self.out(x) if self.out is not None else x


class FcnTrunk(nn.Module):
    """build_fcn_net without the final Linear(80, 2): BN quirk -> hidden layers with `act`."""

    def __init__(self, inp, hidden, act):
        super().__init__()
        self.bn = FeatAffine(inp)
        self.n = len(hidden)
        for i, h in enumerate(hidden):
            setattr(self, f"fc{i}", nn.Linear(inp, h))
            setattr(self, f"act{i}", act(h))
            inp = h
        self.out_dim = inp

    def forward(self, x):
        x = self.bn(x)
        for i in range(self.n):
            x = getattr(self, f"act{i}")(getattr(self, f"fc{i}")(x))
        return x


class CtrEmbeddings(nn.Module):
    def __init__(self, vocab, dim):
        super().__init__()
        users, items, cats = vocab
        self.uid = nn.Embedding(users, dim)
        self.mid = nn.Embedding(items, dim)
        self.cat = nn.Embedding(cats, dim)

    def pair(self, items, cats):
        return torch.cat([self.mid(items), self.cat(cats)], -1)

    def views(self, b):
        """u [B,E], ieb [B,2E], heb [B,T,2E], hsum [B,2E] (masked sum)."""
        u = self.uid(b["users"])
        ieb = self.pair(b["target_items"], b["target_cats"])
        heb = self.pair(b["hist_items"], b["hist_cats"])
        hsum = (heb * b["mask"].unsqueeze(-1)).sum(1)
        return u, ieb, heb, hsum


class DinAttention(nn.Module):
    """din_attention: MLP([q; k; q-k; q*k]) -> masked (-2^32+1) softmax over t -> sum_t w_t k_t."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.mlp = Mlp(4 * dim, hidden, lambda _h: Sigmoid(), output=1)

    def forward(self, q, keys, mask):
        q = q.unsqueeze(1).expand_as(keys)
        s = self.mlp(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
        s = torch.where(mask != 0, s, torch.full_like(s, FILL))
        w = torch.softmax(s, -1)
        return (w.unsqueeze(-1) * keys).sum(1)


# ----------------------------------------------------------------------------- backbones


class WideDeep(nn.Module):
    def __init__(self, vocab=VOCAB, e=E, hidden=HIDDEN):
        super().__init__()
        self.emb = CtrEmbeddings(vocab, e)
        self.fcn = FcnTrunk(5 * e, hidden, PRelu)
        self.feature_dim = self.fcn.out_dim + 6 * e

    def forward(self, b):
        u, ieb, _heb, hsum = self.emb.views(b)
        deep = self.fcn(torch.cat([u, ieb, hsum], -1))
        return torch.cat([deep, ieb, hsum, ieb * hsum], -1), None


class Pnn(nn.Module):
    def __init__(self, vocab=VOCAB, e=E, hidden=HIDDEN):
        super().__init__()
        self.emb = CtrEmbeddings(vocab, e)
        self.fcn = FcnTrunk(7 * e, hidden, PRelu)
        self.feature_dim = self.fcn.out_dim

    def forward(self, b):
        u, ieb, _heb, hsum = self.emb.views(b)
        return self.fcn(torch.cat([u, ieb, hsum, ieb * hsum], -1)), None


class FmTables(nn.Module):
    """First-order (scalar) weights per uid / mid / cat id."""

    def __init__(self, vocab):
        super().__init__()
        users, items, cats = vocab
        self.uid = nn.Embedding(users, 1)
        self.mid = nn.Embedding(items, 1)
        self.cat = nn.Embedding(cats, 1)


class DeepFm(nn.Module):
    def __init__(self, vocab=VOCAB, e=E, hidden=HIDDEN):
        super().__init__()
        self.e = e
        self.emb = CtrEmbeddings(vocab, e)
        self.fm = FmTables(vocab)
        self.fcn = FcnTrunk(5 * e, hidden, PRelu)
        self.feature_dim = self.fcn.out_dim

    def forward(self, b):
        u, ieb, _heb, hsum = self.emb.views(b)
        deep = self.fcn(torch.cat([u, ieb, hsum], -1))
        mask = b["mask"]
        first = (
            self.fm.uid(b["users"]).squeeze(-1)
            + self.fm.mid(b["target_items"]).squeeze(-1)
            + self.fm.cat(b["target_cats"]).squeeze(-1)
            + ((self.fm.mid(b["hist_items"]).squeeze(-1) + self.fm.cat(b["hist_cats"]).squeeze(-1)) * mask).sum(1)
        )
        e = self.e
        fields = torch.stack([u, ieb[:, :e], ieb[:, e:], hsum[:, :e], hsum[:, e:]], 1)  # [B, 5, E]
        second = 0.5 * (fields.sum(1).square() - fields.square().sum(1)).sum(1)
        return deep, first + second


class Din(nn.Module):
    def __init__(self, vocab=VOCAB, e=E, hidden=HIDDEN, att_hidden=ATT_HIDDEN):
        super().__init__()
        self.emb = CtrEmbeddings(vocab, e)
        self.att = DinAttention(2 * e, att_hidden)
        self.fcn = FcnTrunk(9 * e, hidden, Dice)
        self.feature_dim = self.fcn.out_dim

    def forward(self, b):
        u, ieb, heb, hsum = self.emb.views(b)
        att = self.att(ieb, heb, b["mask"])
        return self.fcn(torch.cat([u, ieb, hsum, ieb * hsum, att], -1)), None


class WithHeads(nn.Module):
    """The backbone's parameters at the root, a Quantile head `head.*`, a CTR head `ctr.head.*`."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        d = backbone.feature_dim
        self.head = nn.Linear(d, 2 * QUANTILES)
        self.ctr = nn.Module()
        self.ctr.head = nn.Linear(d, 1)

    def forward(self, b):
        features, offset = self.backbone(b)
        n = features.shape[0]
        q = self.head(features).reshape(n, 2, QUANTILES)
        ctr = self.ctr.head(features).squeeze(-1)
        if offset is not None:
            sel = torch.zeros(1, 2, 1, dtype=q.dtype, device=q.device)
            sel[0, ACTION_P, 0] = 1.0
            q = q + offset.reshape(n, 1, 1) * sel
            ctr = ctr + offset
        return features, offset, q, ctr

    def weights(self):
        """Parameter names as in the Rust VarMap: the backbone's without the `backbone.` prefix."""
        return {k.removeprefix("backbone."): v for k, v in self.state_dict().items()}


# ----------------------------------------------------------------------------- fixtures


def randomise(model, gen):
    """Moves every parameter off its init so that the parity test exercises it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith(("emb.uid.weight", "emb.mid.weight", "emb.cat.weight")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
                p[0].zero_()  # padding row
            elif name.startswith("backbone.fm."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
                p[0].zero_()
            elif leaf == "weight":
                fan_out, fan_in = p.shape
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif leaf == "gamma":
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif leaf == "beta":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif leaf == "alpha":
                p.copy_(torch.rand(p.shape, generator=gen) - 0.3)
            else:
                raise ValueError(f"unexpected parameter {name}")


def make_batch(gen):
    users, items, cats = VOCAB
    b, t = len(LENGTHS), max(LENGTHS)
    cat_of = torch.randint(1, cats, (items,), generator=gen)
    cat_of[0] = 0
    mask = torch.zeros(b, t)
    for row, n in enumerate(LENGTHS):
        mask[row, :n] = 1.0
    real = mask.long()
    hist_items = torch.randint(1, items, (b, t), generator=gen) * real
    hist_neg_items = torch.randint(1, items, (b, t), generator=gen) * real
    target_items = torch.randint(1, items, (b,), generator=gen)
    return {
        "users": torch.randint(1, users, (b,), generator=gen),
        "hist_items": hist_items,
        "hist_cats": cat_of[hist_items],
        "hist_neg_items": hist_neg_items,
        "hist_neg_cats": cat_of[hist_neg_items],
        "mask": mask,
        "lengths": torch.tensor(LENGTHS, dtype=torch.long),
        "target_items": target_items,
        "target_cats": cat_of[target_items],
        "labels": torch.randint(0, 2, (b,), generator=gen).float(),
    }


def write_fixture(name, backbone, seed, extra_meta=None):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = WithHeads(backbone)
    randomise(model, gen)
    batch = make_batch(gen)
    weights = {k: v.detach().float().contiguous() for k, v in model.weights().items()}

    # Expected outputs in float64 from the float32 weights.
    model64 = model.double()
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    with torch.no_grad():
        features, offset, q, ctr = model64(b64)
    tensors = dict(weights)
    tensors.update({f"input.{k}": v.contiguous() for k, v in batch.items()})
    tensors["expected.features"] = features.contiguous()
    tensors["expected.quantile"] = q.contiguous()
    tensors["expected.ctr"] = ctr.contiguous()
    if offset is not None:
        tensors["expected.offset"] = offset.contiguous()
    meta = {"vocab": list(VOCAB), "embedding_dim": [E], "hidden": list(HIDDEN)}
    meta.update(extra_meta or {})
    tensors.update({f"meta.{k}": torch.tensor(v, dtype=torch.long) for k, v in meta.items()})

    out = ROOT / "crates" / f"mtrec-{name}" / "tests" / "fixtures" / "parity.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    # One metadata entry: safetensors writes a metadata map in hash order, so several would make
    # the bytes differ from run to run.
    save_file(tensors, str(out), metadata={"generator": f"tests/reference/ctr_models.py ({name})"})
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes, {len(weights)} weights, features {tuple(features.shape)}")


def main():
    write_fixture("widedeep", WideDeep(), seed=11)
    write_fixture("pnn", Pnn(), seed=12)
    write_fixture("deepfm", DeepFm(), seed=13)
    write_fixture("din", Din(), seed=14, extra_meta={"attention_hidden": list(ATT_HIDDEN)})


if __name__ == "__main__":
    main()
