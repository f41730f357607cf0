#!/usr/bin/env python3
"""PyTorch reference of MTRec's DIEN backbone (crates/mtrec-dien) and the generator of its
forward-parity fixture crates/mtrec-dien/tests/fixtures/parity.safetensors.

Architecture: mouna99/dien `script/model.py::Model_DIN_V2_Gru_Vec_attGru_Neg` with `utils.py`
(`din_fcn_attention`, `VecAttGRUCell`, `prelu`), `Dice.py` and `rnn.py` (`dynamic_rnn`), as in
specs/backbones.md §2.5, with the Rust crate's documented deviations: embedding row 0 is a zero
padding row (history sum = masked sum), the auxiliary loss's not-clicked term is
-log(softmax(z)[1] + 1e-8), and the backbone stops before the final Linear(80, 2), which a head
(`head.*` for a Quantile(10) head, `ctr.head.*` for a one-logit CTR head) replaces.

This file is written independently of the Rust formulation where it matters: the GRUs run TF's
fused `[x ; h] @ kernel` cells step by step with `dynamic_rnn`'s length-based copy-through, and
the auxiliary loss is the reference's dense mean over all B x (T-1) slots (the Rust code only
feeds the real pairs to the network).

Parameter names equal the Rust VarMap names (`emb.mid.weight`, `gru1.gates.kernel`,
`att.query.weight`, `aux.fc0.weight`, `fcn.fc0.weight`, ...). Linear weights are [out, in]; the
GRU kernels are TF's input-major [in, out].

The fixture holds
  * every parameter (float32), randomised so that none sits at a trivial init value;
  * `input.*`: the batch of tests/reference/ctr_models.py (B = 6, T = 5, left-aligned lengths
    5, 3, 0, 1, 4, 2, id 0 = padding, a logged negative per history position);
  * `expected.features` [B, F], `expected.quantile` [B, 2, 10], `expected.ctr` [B],
    `expected.aux_loss` [] and the intermediates `expected.states` [B, T, H] (interest extractor),
    `expected.attention` [B, T] and `expected.last` [B, H] (AUGRU final state), in float64 from
    the float32 weights;
  * `meta.*` (int64): `vocab`, `embedding_dim`, `gru_hidden`, `hidden` (build_fcn_net's sizes),
    `attention_hidden`, `aux_hidden`: the configuration the Rust test builds the model with.

Run `python3 tests/reference/dien.py` from anywhere (needs torch, safetensors, numpy).
"""

import math
import pathlib
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from ctr_models import (  # noqa: E402  (shared layers and the shared parity batch)
    ATT_HIDDEN,
    E,
    FILL,
    HIDDEN,
    QUANTILES,
    ROOT,
    VOCAB,
    CtrEmbeddings,
    Dice,
    FeatAffine,
    FcnTrunk,
    Mlp,
    PRelu,
    Sigmoid,
    WithHeads,
    make_batch,
)

H = 36  # official HIDDEN_SIZE
AUX_HIDDEN = (32, 16)  # auxiliary_net's (100, 50), shrunk to keep the fixture small
PROB_EPS = 1e-8  # the reference's softmax(...) + 0.00000001
SEED = 15


class TfGruCell(nn.Module):
    """TF 1.x GRUCell: [r; u] = sigmoid([x; h] @ Wg + bg); c = tanh([x; r*h] @ Wc + bc);
    h' = u*h + (1-u)*c. With `att`, VecAttGRUCell: u := (1 - att) * u."""

    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.gates = nn.Module()
        self.gates.kernel = nn.Parameter(torch.zeros(d + h, 2 * h))
        self.gates.bias = nn.Parameter(torch.ones(2 * h))
        self.candidate = nn.Module()
        self.candidate.kernel = nn.Parameter(torch.zeros(d + h, h))
        self.candidate.bias = nn.Parameter(torch.zeros(h))

    def step(self, x, state, att=None):
        g = torch.sigmoid(torch.cat([x, state], -1) @ self.gates.kernel + self.gates.bias)
        r, u = g[:, : self.h], g[:, self.h :]
        c = torch.tanh(torch.cat([x, r * state], -1) @ self.candidate.kernel + self.candidate.bias)
        if att is not None:
            u = (1.0 - att) * u
        return u * state + (1.0 - u) * c

    def dynamic_rnn(self, x, lengths, att=None):
        """rnn.py::dynamic_rnn with sequence_length: zero outputs and a copied state for t >= len."""
        b, t, _ = x.shape
        state = torch.zeros(b, self.h, dtype=x.dtype, device=x.device)
        outputs = []
        for s in range(t):
            a = None if att is None else att[:, s : s + 1]
            new = self.step(x[:, s], state, a)
            alive = (lengths > s).unsqueeze(-1)
            outputs.append(torch.where(alive, new, torch.zeros_like(new)))
            state = torch.where(alive, new, state)
        return torch.stack(outputs, 1), state


class InterestAttention(nn.Module):
    """din_fcn_attention(softmax_stag=1, mode='LIST', return_alphas=True): the alphas."""

    def __init__(self, d, h, hidden):
        super().__init__()
        self.query = nn.Linear(d, h)
        self.query_prelu = PRelu(h)
        self.mlp = Mlp(4 * h, hidden, lambda _h: Sigmoid(), output=1)

    def forward(self, ieb, facts, mask):
        q = self.query_prelu(self.query(ieb)).unsqueeze(1).expand_as(facts)
        s = self.mlp(torch.cat([q, facts, q - facts, q * facts], -1)).squeeze(-1)
        s = torch.where(mask == 1, s, torch.full_like(s, FILL))
        return torch.softmax(s, -1)


class AuxNet(nn.Module):
    """auxiliary_net: BN quirk -> fc0 sigmoid -> fc1 sigmoid -> out (2 logits)."""

    def __init__(self, inp, hidden):
        super().__init__()
        self.bn = FeatAffine(inp)
        self.n = len(hidden)
        for i, h in enumerate(hidden):
            setattr(self, f"fc{i}", nn.Linear(inp, h))
            inp = h
        self.out = nn.Linear(inp, 2)

    def forward(self, x):
        x = self.bn(x)
        for i in range(self.n):
            x = torch.sigmoid(getattr(self, f"fc{i}")(x))
        return torch.softmax(self.out(x), -1)


class Dien(nn.Module):
    def __init__(
        self, vocab=VOCAB, e=E, h=H, hidden=HIDDEN, att_hidden=ATT_HIDDEN, aux_hidden=AUX_HIDDEN
    ):
        super().__init__()
        d = 2 * e
        self.emb = CtrEmbeddings(vocab, e)
        self.gru1 = TfGruCell(d, h)
        self.aux = AuxNet(h + d, aux_hidden)
        self.att = InterestAttention(d, h, att_hidden)
        self.gru2 = TfGruCell(h, h)
        self.fcn = FcnTrunk(7 * e + h, hidden, Dice)
        self.feature_dim = self.fcn.out_dim
        self.last = {}

    def forward(self, b):
        u, ieb, heb, hsum = self.emb.views(b)
        mask, lengths = b["mask"], b["lengths"]
        states, _ = self.gru1.dynamic_rnn(heb, lengths)
        alphas = self.att(ieb, states, mask)
        _, last = self.gru2.dynamic_rnn(states, lengths, att=alphas)
        features = self.fcn(torch.cat([u, ieb, hsum, ieb * hsum, last], -1))
        neg = self.emb.pair(b["hist_neg_items"], b["hist_neg_cats"])
        self.last = {
            "states": states,
            "attention": alphas,
            "last": last,
            "aux_loss": self.aux_loss(states[:, :-1], heb[:, 1:], neg[:, 1:], mask[:, 1:]),
        }
        return features, None

    def aux_loss(self, h_states, click_seq, noclick_seq, mask):
        """model.py::auxiliary_loss, mean over all B x (T-1) slots (masked ones count as 0)."""
        click = self.aux(torch.cat([h_states, click_seq], -1))[:, :, 0] + PROB_EPS
        noclick = self.aux(torch.cat([h_states, noclick_seq], -1))[:, :, 1] + PROB_EPS
        return (-torch.log(click) * mask - torch.log(noclick) * mask).mean()


def randomise(model, gen):
    """Moves every parameter off its init so that the parity test exercises it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.startswith("backbone.emb."):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
                p[0].zero_()  # padding row
            elif leaf == "kernel":  # TF layout [in, out]
                fan_in, fan_out = p.shape
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif name.endswith("gates.bias"):
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.3)
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


def main():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = WithHeads(Dien())
    randomise(model, gen)
    batch = make_batch(gen)
    weights = {k: v.detach().float().contiguous() for k, v in model.weights().items()}

    # Expected outputs in float64 from the float32 weights.
    model64 = model.double()
    b64 = {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}
    with torch.no_grad():
        features, _offset, q, ctr = model64(b64)
    inner = model64.backbone.last
    tensors = dict(weights)
    tensors.update({f"input.{k}": v.contiguous() for k, v in batch.items()})
    tensors["expected.features"] = features.contiguous()
    tensors["expected.quantile"] = q.contiguous()
    tensors["expected.ctr"] = ctr.contiguous()
    for k, v in inner.items():
        tensors[f"expected.{k}"] = v.contiguous()
    meta = {
        "vocab": list(VOCAB),
        "embedding_dim": [E],
        "gru_hidden": [H],
        "hidden": list(HIDDEN),
        "attention_hidden": list(ATT_HIDDEN),
        "aux_hidden": list(AUX_HIDDEN),
    }
    tensors.update({f"meta.{k}": torch.tensor(v, dtype=torch.long) for k, v in meta.items()})

    out = ROOT / "crates" / "mtrec-dien" / "tests" / "fixtures" / "parity.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    # One metadata entry: safetensors writes a map in arbitrary order, so more would change the bytes.
    save_file(tensors, str(out), metadata={"generator": "tests/reference/dien.py"})
    print(
        f"{out.relative_to(ROOT)}: {out.stat().st_size} bytes, {len(weights)} weights, "
        f"features {tuple(features.shape)}, aux loss {inner['aux_loss'].item():.6f}"
    )


if __name__ == "__main__":
    main()
