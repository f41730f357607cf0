"""Reference values for mtrec-eval's tests, computed once with scikit-learn and SciPy.

Run from this folder (needs numpy, scikit-learn, scipy):

    python make_fixtures.py

It writes ../fixtures/sklearn_reference.json. The Rust tests read that JSON, so CI needs no Python.
Everything is deterministic (fixed numpy seed); rerunning it reproduces the file byte for byte
with the same library versions (recorded in the file).
"""

import json
import pathlib

import numpy as np
import scipy
import sklearn
from scipy.stats import t as student_t
from sklearn.metrics import log_loss, roc_auc_score

SEED = 20251203
N = 5000
N_USERS = 120

rng = np.random.default_rng(SEED)

# Labels ~ Bernoulli(0.3); scores shifted up for positives, rounded to 2 decimals so that many
# scores tie (at most 101 distinct values for 5,000 samples), including pos/neg ties.
labels = (rng.random(N) < 0.3).astype(np.int64)
raw = rng.normal(0.45 + 0.12 * labels, 0.18)
scores = np.round(np.clip(raw, 0.0, 1.0), 2)
auc = roc_auc_score(labels, scores)

# Groups for GAUC: users 0..N_USERS-1 with uneven sizes; a few single-class users.
groups = rng.choice(N_USERS, size=N, p=rng.dirichlet(np.full(N_USERS, 0.7)))
gauc_num = 0.0
gauc_den = 0.0
users_counted = 0
for g in np.unique(groups):
    m = groups == g
    if labels[m].min() == labels[m].max():
        continue
    gauc_num += m.sum() * roc_auc_score(labels[m], scores[m])
    gauc_den += m.sum()
    users_counted += 1
gauc = gauc_num / gauc_den

# Log loss on the first N_LL labels, from logits and from their probabilities (away from 0/1, so no clipping is involved).
N_LL = 1000
logits = np.round(rng.normal(-0.5 + 1.5 * labels[:N_LL], 1.5), 3)
probs = 1.0 / (1.0 + np.exp(-logits))
ll = log_loss(labels[:N_LL], probs)

# Student t quantiles.
dfs = list(range(1, 31)) + [40, 60, 120, 1000]
ps = [0.9, 0.95, 0.975, 0.99, 0.995]
t_table = [{"df": df, "p": p, "t": float(student_t.ppf(p, df))} for df in dfs for p in ps]

out = {
    "generator": "tests/reference/make_fixtures.py",
    "versions": {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "scipy": scipy.__version__},
    "seed": SEED,
    "auc": {"scores": scores.tolist(), "labels": labels.tolist(), "roc_auc_score": float(auc)},
    "gauc": {
        "groups": groups.tolist(),
        "weighting": "samples",
        "gauc": float(gauc),
        "users_counted": users_counted,
        "users_total": int(len(np.unique(groups))),
    },
    "logloss": {"logits": logits.tolist(), "labels": "the first len(logits) labels of auc", "log_loss": float(ll)},
    "student_t_ppf": t_table,
}
path = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "sklearn_reference.json"
path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
print(f"wrote {path}: auc={auc:.15f} gauc={gauc:.15f} ({users_counted} users) logloss={ll:.15f}")
