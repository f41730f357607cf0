#!/usr/bin/env python3
"""PyTorch references of MTRec's two self-attentive sequence backbones, SASRec and LinRec, written
to match the Rust formulation in crates/mtrec-{sasrec,linrec} exactly, and the generator of their
forward-parity fixtures.

SASRec follows the official TensorFlow code (kang205/SASRec `model.py`, `modules.py`;
specs/backbones.md §2.6): pre-LN queries, keys/values from the un-normalised sequence, residual from
the normalised queries, ReLU feed-forward d -> d -> d, LayerNorm eps 1e-8, tokens scaled by sqrt(d),
learned positions, left-padded sequences (our `Align::Right`), final LayerNorm, read at the last
column. The attention masks are derived *the official way* here (key mask = sign(|sum of the key
features|), query mask = sign(|sum of the normalised query features|), scores replaced by -2^32+1,
heads split along the features and stacked on the batch axis as `tf.split`/`tf.concat` do), while
the Rust code uses the batch mask: the parity test checks that both agree.

LinRec follows the official code (Applied-Machine-Learning-Lab/LinRec `layers.py` in RecBole's
SASRec; specs/backbones.md §2.7): post-LN layers, elu (alpha 1) + per-token L2 norms of the query
rows and key rows (with the Rust code's eps: sqrt(|x|^2 + eps^2)), ctx = Qn (Kn^T V) / sqrt(d_h), no
mask or softmax, erf-GELU feed-forward d -> inner -> d, LayerNorm eps 1e-12, right-padded sequences
(our `Align::Left`) read at column len - 1 (column 0 for an empty history).

Both use the CTR adaptation of the Rust crates (specs/backbones.md §4): a token is
[Emb_item(item) ; Emb_cat(category)] (item d - d//2 columns, category d//2), id 0 embeds to zero,
the target is embedded with the same tables, and the features are z = h * e_target; a Quantile(10)
head `head.*` and a CTR head `ctr.head.*` sit on z.

Parameter names equal the Rust VarMap names (SASRec: pmixer/SASRec.pytorch's `item_emb`,
`attention_layernorms.{i}`, `attention_layers.{i}.{query,key,value}`, `forward_layernorms.{i}`,
`forward_layers.{i}.{conv1,conv2}`, `last_layernorm`; LinRec: RecBole's `item_embedding`,
`position_embedding`, `LayerNorm`, `trm_encoder.layer.{i}.multi_head_attention.*`, ...); Linear
weights are [out, in] on both sides.

Each fixture `crates/mtrec-<name>/tests/fixtures/parity.safetensors` holds
  * every parameter (float32), randomised so that no parameter sits at a trivial init value
    (embedding row 0 is random too: both sides must ignore it);
  * `input.*`: B = 5 samples, fixed width L = 6, history lengths 0, 1, 3, 6, 4, laid out in the
    model's alignment; ids int64, mask and labels float32;
  * `expected.h` [B, d] (the sequence representation), `expected.features` [B, d],
    `expected.quantile` [B, 2, 10], `expected.ctr` [B], computed in float64 from the float32 weights
    in evaluation mode (no dropout);
  * `meta.*` (int64): the configuration the Rust test builds the model with.

Run `python3 tests/reference/seq_models.py` from anywhere (needs torch, safetensors, numpy).
"""

import math
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]

FILL = -(2.0**32) + 1  # modules.py: padding score of masked attention entries
VOCAB = (40, 50, 6)  # users, items, categories (largest id + 1; id 0 = padding)
LENGTHS = (0, 1, 3, 6, 4)
WIDTH = 6
QUANTILES = 10

SASREC = {"hidden_units": 12, "num_blocks": 2, "num_heads": 2, "maxlen": WIDTH}
SASREC_LN_EPS = 1e-8
# n_heads 5 does not divide 12: the Rust heads rule picks 4 (the largest count <= 5 dividing 12).
LINREC = {"hidden_size": 12, "inner_size": 20, "n_layers": 2, "n_heads": 5, "max_seq_length": WIDTH}
LINREC_HEADS = 4
LINREC_LN_EPS = 1e-12
LINREC_NORM_EPS = 1e-6


class TokenEmbedding(nn.Module):
    """[Emb_item ; Emb_cat] with id 0 embedding to zero (TF `zero_pad` / frozen padding)."""

    def __init__(self, d, item_name, cat_name, vocab=VOCAB):
        super().__init__()
        _, items, cats = vocab
        self.names = (item_name, cat_name)
        setattr(self, item_name, nn.Embedding(items, d - d // 2))
        setattr(self, cat_name, nn.Embedding(cats, d // 2))

    def forward(self, items, cats):
        parts = []
        for name, ids in zip(self.names, (items, cats)):
            table = getattr(self, name).weight
            table = torch.cat([torch.zeros_like(table[:1]), table[1:]], 0)  # row 0 = padding
            parts.append(table[ids])
        return torch.cat(parts, -1)


# ----------------------------------------------------------------------------- SASRec (TF layout)


def tf_normalize(x, ln):
    """modules.py::normalize: (x - mean) / sqrt(var + eps) * gamma + beta, biased variance."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + SASREC_LN_EPS) * ln.weight + ln.bias


class TfAttention(nn.Module):
    """modules.py::multihead_attention (query/key/value dense layers, no output projection)."""

    def __init__(self, d, heads, dropout=0.0):
        super().__init__()
        self.heads = heads
        self.p = dropout
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)

    def forward(self, queries, keys):
        h = self.heads
        q, k, v = self.query(queries), self.key(keys), self.value(keys)
        # tf.concat(tf.split(Q, h, axis=2), axis=0): heads stacked on the batch axis.
        q_ = torch.cat(torch.chunk(q, h, dim=2), 0)
        k_ = torch.cat(torch.chunk(k, h, dim=2), 0)
        v_ = torch.cat(torch.chunk(v, h, dim=2), 0)
        out = q_ @ k_.transpose(1, 2) / math.sqrt(k_.shape[-1])
        # Key masking from the keys' features.
        key_masks = torch.sign(torch.abs(keys.sum(-1))).repeat(h, 1)  # [hB, Lk]
        key_masks = key_masks.unsqueeze(1).expand(-1, queries.shape[1], -1)
        out = torch.where(key_masks == 0, torch.full_like(out, FILL), out)
        # Causality.
        tril = torch.tril(torch.ones_like(out[0]))
        out = torch.where(tril.unsqueeze(0) == 0, torch.full_like(out, FILL), out)
        out = torch.softmax(out, -1)
        # Query masking from the (normalised) queries' features.
        query_masks = torch.sign(torch.abs(queries.sum(-1))).repeat(h, 1).unsqueeze(-1)
        out = out * query_masks
        out = F.dropout(out, self.p, self.training)
        out = out @ v_
        out = torch.cat(torch.chunk(out, h, dim=0), 2)  # back to [B, L, d]
        return out + queries  # residual from the normalised queries


class ConvFfn(nn.Module):
    """modules.py::feedforward with kernel-size-1 conv1d = dense layers, ReLU, residual."""

    def __init__(self, d, dropout=0.0):
        super().__init__()
        self.p = dropout
        self.conv1 = nn.Linear(d, d)
        self.conv2 = nn.Linear(d, d)

    def forward(self, x):
        h = F.dropout(torch.relu(self.conv1(x)), self.p, self.training)
        return F.dropout(self.conv2(h), self.p, self.training) + x


class SasRec(nn.Module):
    """`dropout` (default 0: the parity fixtures are evaluation-mode) where the official code and
    the Rust model apply dropout_rate in training: embeddings, attention weights, both FFN layers."""

    def __init__(self, cfg, vocab=VOCAB, dropout=0.0):
        super().__init__()
        d = cfg["hidden_units"]
        self.d = d
        self.p = dropout
        self.tokens = TokenEmbedding(d, "item_emb", "cat_emb", vocab)
        self.pos_emb = nn.Embedding(cfg["maxlen"], d)
        n = cfg["num_blocks"]
        self.attention_layernorms = nn.ModuleList([nn.LayerNorm(d) for _ in range(n)])
        self.attention_layers = nn.ModuleList([TfAttention(d, cfg["num_heads"], dropout) for _ in range(n)])
        self.forward_layernorms = nn.ModuleList([nn.LayerNorm(d) for _ in range(n)])
        self.forward_layers = nn.ModuleList([ConvFfn(d, dropout) for _ in range(n)])
        self.last_layernorm = nn.LayerNorm(d)
        self.feature_dim = d

    def forward(self, b):
        items, cats = b["hist_items"], b["hist_cats"]
        seq = self.tokens(items, cats) * math.sqrt(self.d)
        positions = torch.arange(items.shape[1], device=items.device)  # width == maxlen
        seq = seq + self.pos_emb.weight[positions]
        mask = (items != 0).to(seq.dtype).unsqueeze(-1)
        seq = F.dropout(seq, self.p, self.training) * mask
        for ln_a, att, ln_f, ffn in zip(
            self.attention_layernorms, self.attention_layers, self.forward_layernorms, self.forward_layers
        ):
            seq = att(tf_normalize(seq, ln_a), seq)
            seq = ffn(tf_normalize(seq, ln_f))
            seq = seq * mask
        seq = tf_normalize(seq, self.last_layernorm)
        h = seq[:, -1]  # left-padded: the most recent item is in the last column
        e = self.tokens(b["target_items"], b["target_cats"])
        return h, h * e


# ----------------------------------------------------------------------------- LinRec (RecBole)


class LinAttention(nn.Module):
    """layers.py::MultiHeadAttention (Elu Norm Attention), post-LN with residual."""

    def __init__(self, d, heads, dropout=0.0):
        super().__init__()
        self.p = dropout
        self.h = heads
        self.dh = d // heads
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.dense = nn.Linear(d, d)
        self.LayerNorm = nn.LayerNorm(d, eps=LINREC_LN_EPS)

    def split(self, x):
        return x.view(*x.shape[:-1], self.h, self.dh)

    def forward(self, x):
        q = self.split(self.query(x)).permute(0, 2, 1, 3)  # [B, h, L, dh]
        k = self.split(self.key(x)).permute(0, 2, 3, 1)  # [B, h, dh, L]
        v = self.split(self.value(x)).permute(0, 2, 1, 3)  # [B, h, L, dh]
        eq, ek = F.elu(q), F.elu(k)
        eps2 = LINREC_NORM_EPS**2
        q_inv = 1.0 / torch.sqrt(torch.norm(eq, dim=3, p=2) ** 2 + eps2)
        k_inv = 1.0 / torch.sqrt(torch.norm(ek, dim=2, p=2) ** 2 + eps2)
        nq = torch.einsum("mnij,mni->mnij", eq, q_inv)
        nk = torch.einsum("mnij,mnj->mnij", ek, k_inv)
        ctx = nq @ (nk @ v) / math.sqrt(self.dh)
        ctx = ctx.permute(0, 2, 1, 3).reshape(x.shape)
        return self.LayerNorm(F.dropout(self.dense(ctx), self.p, self.training) + x)


class FeedForward(nn.Module):
    def __init__(self, d, inner, dropout=0.0):
        super().__init__()
        self.p = dropout
        self.dense_1 = nn.Linear(d, inner)
        self.dense_2 = nn.Linear(inner, d)
        self.LayerNorm = nn.LayerNorm(d, eps=LINREC_LN_EPS)

    def forward(self, x):
        h = self.dense_1(x)
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))  # RecBole's gelu
        return self.LayerNorm(F.dropout(self.dense_2(h), self.p, self.training) + x)


class TrmLayer(nn.Module):
    def __init__(self, d, inner, heads, dropout=0.0):
        super().__init__()
        self.multi_head_attention = LinAttention(d, heads, dropout)
        self.feed_forward = FeedForward(d, inner, dropout)

    def forward(self, x):
        return self.feed_forward(self.multi_head_attention(x))


class LinRec(nn.Module):
    """`dropout` (default 0: the fixtures are evaluation-mode) is hidden_dropout_prob, applied in
    training after the embedding LayerNorm and before each residual, as RecBole and the Rust model do."""

    def __init__(self, cfg, heads, vocab=VOCAB, dropout=0.0):
        super().__init__()
        d = cfg["hidden_size"]
        self.p = dropout
        self.tokens = TokenEmbedding(d, "item_embedding", "cat_embedding", vocab)
        self.position_embedding = nn.Embedding(cfg["max_seq_length"], d)
        self.LayerNorm = nn.LayerNorm(d, eps=LINREC_LN_EPS)
        self.trm_encoder = nn.Module()
        self.trm_encoder.layer = nn.ModuleList(
            [TrmLayer(d, cfg["inner_size"], heads, dropout) for _ in range(cfg["n_layers"])]
        )
        self.feature_dim = d

    def forward(self, b):
        items, cats = b["hist_items"], b["hist_cats"]
        x = self.tokens(items, cats) + self.position_embedding.weight[torch.arange(items.shape[1], device=items.device)]
        x = F.dropout(self.LayerNorm(x), self.p, self.training)
        for layer in self.trm_encoder.layer:
            x = layer(x)
        idx = (b["lengths"] - 1).clamp(min=0)  # RecBole gather_indexes; empty history -> column 0
        h = x[torch.arange(x.shape[0], device=x.device), idx]
        e = self.tokens(b["target_items"], b["target_cats"])
        return h, h * e


# ----------------------------------------------------------------------------- fixtures


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
        h, z = self.backbone(b)
        q = self.head(z).reshape(z.shape[0], 2, QUANTILES)
        return h, z, q, self.ctr.head(z).squeeze(-1)

    def weights(self):
        """Names as in the Rust VarMap: no `backbone.` prefix, token tables at the root."""
        return {
            k.removeprefix("backbone.").removeprefix("tokens."): v for k, v in self.state_dict().items()
        }


def randomise(model, gen):
    """Moves every parameter off its init so that the parity test exercises it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_ln = "layernorm" in name.lower()
            if "emb" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)  # row 0 too: must be ignored
            elif is_ln and leaf == "weight":
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif is_ln and leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif leaf == "weight":
                fan_out, fan_in = p.shape
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:
                raise ValueError(f"unexpected parameter {name}")


def make_batch(gen, right_aligned):
    """B = len(LENGTHS) rows of width WIDTH; `right_aligned` puts the history in the last columns."""
    users, items, cats = VOCAB
    b = len(LENGTHS)
    cat_of = torch.randint(1, cats, (items,), generator=gen)
    cat_of[0] = 0
    mask = torch.zeros(b, WIDTH)
    for row, n in enumerate(LENGTHS):
        if right_aligned:
            mask[row, WIDTH - n :] = 1.0
        else:
            mask[row, :n] = 1.0
    real = mask.long()
    hist_items = torch.randint(1, items, (b, WIDTH), generator=gen) * real
    hist_neg_items = torch.randint(1, items, (b, WIDTH), generator=gen) * real
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


def write_fixture(name, backbone, seed, right_aligned, meta):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = WithHeads(backbone)
    randomise(model, gen)
    batch = make_batch(gen, right_aligned)
    weights = {k: v.detach().float().contiguous() for k, v in model.weights().items()}

    # Expected outputs in float64 from the float32 weights, evaluation mode (no dropout).
    model64 = model.double().eval()
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    with torch.no_grad():
        h, z, q, ctr = model64(b64)
    tensors = dict(weights)
    tensors.update({f"input.{k}": v.contiguous() for k, v in batch.items()})
    tensors["expected.h"] = h.contiguous()
    tensors["expected.features"] = z.contiguous()
    tensors["expected.quantile"] = q.contiguous()
    tensors["expected.ctr"] = ctr.contiguous()
    meta = {"vocab": list(VOCAB), **{k: [v] for k, v in meta.items()}}
    tensors.update({f"meta.{k}": torch.tensor(v, dtype=torch.long) for k, v in meta.items()})

    out = ROOT / "crates" / f"mtrec-{name}" / "tests" / "fixtures" / "parity.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    # One metadata entry: several would be written in hash order and make the bytes vary.
    save_file(tensors, str(out), metadata={"generator": f"tests/reference/seq_models.py ({name})"})
    print(
        f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes, {len(weights)} weights, "
        f"features {tuple(z.shape)}"
    )


def main():
    write_fixture("sasrec", SasRec(SASREC), seed=21, right_aligned=True, meta=SASREC)
    write_fixture("linrec", LinRec(LINREC, LINREC_HEADS), seed=22, right_aligned=False, meta=LINREC)


if __name__ == "__main__":
    main()
