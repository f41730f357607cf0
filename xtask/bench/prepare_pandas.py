#!/usr/bin/env python3
"""Straightforward pandas version of mtrec's Amazon-2014 preparation, for a speed comparison.

Usage: python3 prepare_pandas.py REVIEWS_JSON META_JSON OUT_DIR [--seed 1234]

Steps (as in the DIN reference preprocessing, written the way one would in pandas):
  1. reviews: pd.read_json(lines=True), keep reviewerID, asin, unixReviewTime;
  2. meta: ast.literal_eval per line (the references use eval), category = categories[-1][-1]
     (DIN rule), "default" when missing; keep only reviewed asins;
  3. remap users / items / categories by their sorted unique keys to 1..n (0 = padding);
  4. stable sort by (user, time, original row);
  5. one uniform negative item per step, not among the user's positives
     (numpy RandomState(seed), rejection sampling, per-user loop);
  6. seeded 10% test-user split;
  7. write OUT_DIR/interactions.parquet (pyarrow) and OUT_DIR/manifest.json.
Prints one JSON line {"seconds", "users", "items", "interactions", "categories"}; "seconds" covers
everything from before `import pandas` to the files being written.

Needs: pip install pandas pyarrow numpy
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import ast  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

TEST_USER_FRACTION = 0.1


def read_reviews(path):
    # dtype: keep ids as strings (read_json would turn all-digit asins such as ISBNs into ints).
    df = pd.read_json(
        path,
        lines=True,
        dtype={"reviewerID": str, "asin": str, "unixReviewTime": "int64"},
    )
    return df[["reviewerID", "asin", "unixReviewTime"]]


def read_meta(path):
    asins, cats = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = ast.literal_eval(line)
            c = d.get("categories")
            asins.append(d["asin"])
            cats.append(c[-1][-1] if c and c[-1] else "default")
    return pd.DataFrame({"asin": asins, "category": cats})


def sample_negatives(users, items, n_items, rng):
    """One negative per interaction; `users` sorted so each user's rows are contiguous."""
    neg = np.empty(len(items), dtype=np.int32)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    for s, e in zip(starts, ends):
        pos = set(items[s:e].tolist())
        for k in range(s, e):
            n = rng.randint(1, n_items + 1)
            while n in pos:
                n = rng.randint(1, n_items + 1)
            neg[k] = n
    return neg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reviews")
    ap.add_argument("meta")
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    reviews = read_reviews(args.reviews)
    meta = read_meta(args.meta)

    # Keep only reviewed asins (and one meta row per asin); unknown asins get "default".
    reviewed = reviews["asin"].unique()
    meta = meta[meta["asin"].isin(reviewed)].drop_duplicates("asin")
    items = pd.DataFrame({"asin": np.sort(reviewed)})
    items = items.merge(meta, on="asin", how="left")
    items["category"] = items["category"].fillna("default")

    # Sorted unique keys -> 1..n (0 is padding).
    items["item"] = np.arange(1, len(items) + 1, dtype=np.int32)
    cat_codes, cat_keys = pd.factorize(items["category"], sort=True)
    items["cat"] = (cat_codes + 1).astype(np.int32)
    user_codes, user_keys = pd.factorize(reviews["reviewerID"], sort=True)

    df = pd.DataFrame(
        {
            "user": (user_codes + 1).astype(np.int32),
            "item": items.set_index("asin")["item"].reindex(reviews["asin"]).to_numpy(),
            "time": reviews["unixReviewTime"].to_numpy(np.int64),
            "row": np.arange(len(reviews), dtype=np.int64),
        }
    )
    item_cat = np.zeros(len(items) + 1, dtype=np.int32)
    item_cat[items["item"].to_numpy()] = items["cat"].to_numpy()
    df["category"] = item_cat[df["item"].to_numpy()]

    # Stable sort by (user, time, original row).
    df = df.sort_values(["user", "time", "row"], kind="stable", ignore_index=True)

    rng = np.random.RandomState(args.seed)
    n_users, n_items, n_cats = len(user_keys), len(items), len(cat_keys)
    df["neg_item"] = sample_negatives(df["user"].to_numpy(), df["item"].to_numpy(), n_items, rng)
    df["neg_category"] = item_cat[df["neg_item"].to_numpy()]

    n_test = int(round(n_users * TEST_USER_FRACTION))
    test_users = rng.permutation(np.arange(1, n_users + 1))[:n_test]
    df["is_test"] = df["user"].isin(test_users)

    os.makedirs(args.out_dir, exist_ok=True)
    out = df[["user", "item", "category", "time", "neg_item", "neg_category", "is_test"]]
    out.to_parquet(os.path.join(args.out_dir, "interactions.parquet"), engine="pyarrow", index=False)
    manifest = {
        "reviews": os.path.abspath(args.reviews),
        "meta": os.path.abspath(args.meta),
        "seed": args.seed,
        "users": n_users,
        "items": n_items,
        "categories": n_cats,
        "interactions": len(out),
        "test_users": n_test,
        "test_interactions": int(out["is_test"].sum()),
    }
    with open(os.path.join(args.out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)

    result = {
        "seconds": round(time.perf_counter() - T0, 3),
        "users": n_users,
        "items": n_items,
        "interactions": len(out),
        "categories": n_cats,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
