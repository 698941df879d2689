#!/usr/bin/env python3
"""Report on fkp's prepare stage: label counts per missing-label strategy and, for mean/median,
how far the filled values lie from the true labels.

Usage: prepare_report.py --sparse SPARSE.csv[.gz] --full FULL.csv[.gz]
                         STRATEGY=PATH/prepared.safetensors [STRATEGY=... ...]

SPARSE is the file fkp prepared; FULL holds the same faces (row i = row i) with nearly every label,
the ground truth. Each prepared.safetensors is read with the `safetensors` package and checked
against the CSVs independently of fkp: images and real labels must match the sparse row named by
`source_rows`, every strategy must validate on the same rows, and `prepare.json` (when it lies
beside the file) must agree with the counts found here.

Counts per strategy (from the tensors):
  training rows        train.images rows
  real labels          sum(train.labelled)
  filled labels        labelled == 0 and loss_mask == 1 (mean/median fill)
  masked labels        loss_mask == 0 (the loss ignores them)
  rows dropped         (rows of SPARSE - validation rows) - training rows
  validation rows      val.images rows;  validation labels = sum(val.labelled)

Errors, in pixels (float64; targets are fkp's float32 values, truth is FULL's float64 value):
  fill RMSE            sqrt(mean(err^2)) over every filled (row, coordinate) whose truth exists
                       in FULL (err = filled target - truth of row source_rows[i]); per keypoint
                       the same over its x and y coordinates only
  median baseline      the same RMSE for predicting the training split's median (computed here
                       from SPARSE's training rows, the same rule fkp's `median` fill uses) for
                       (a) every true label of the training rows in FULL and (b) only the real
                       labels (present in SPARSE) of the training rows
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import pandas as pd
from safetensors import safe_open

SPLITS = ("train", "val")
FIELDS = ("images", "targets", "labelled", "loss_mask", "source_rows")
DTYPES = {"images": np.uint8, "targets": np.float32, "labelled": np.uint8,
          "loss_mask": np.uint8, "source_rows": np.uint32}


def read_csv(path: str):
    df = pd.read_csv(path, dtype={"Image": str})
    coords = [c for c in df.columns if c != "Image"]
    return df, coords


def parse_images(images: pd.Series, side: int) -> np.ndarray:
    out = np.empty((len(images), side * side), dtype=np.uint8)
    for i, s in enumerate(images):
        out[i] = np.array(s.split(), dtype=np.int64)
    return out


def load(path: str):
    tensors = {}
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        for s in SPLITS:
            for k in FIELDS:
                tensors[f"{s}.{k}"] = f.get_tensor(f"{s}.{k}")
    return meta, tensors


def rmse(err: np.ndarray) -> float:
    return math.sqrt(float(np.mean(err ** 2))) if err.size else float("nan")


def fmt(v, digits=3):
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparse", required=True)
    ap.add_argument("--full", required=True)
    ap.add_argument("--json", help="also write every number found here to this JSON file")
    ap.add_argument("prepared", nargs="+", metavar="STRATEGY=PATH")
    args = ap.parse_args()

    sparse_df, coords = read_csv(args.sparse)
    full_df, full_coords = read_csv(args.full)
    if coords != full_coords or len(sparse_df) != len(full_df):
        sys.exit("sparse and full files differ in columns or rows")
    n_rows, n_coords = len(sparse_df), len(coords)
    keypoints = [coords[i][:-2] for i in range(0, n_coords, 2)]
    sparse = sparse_df[coords].to_numpy(dtype=np.float64)
    truth = full_df[coords].to_numpy(dtype=np.float64)
    side = None

    problems = []
    both = ~np.isnan(sparse) & ~np.isnan(truth)
    n_disagree = int(np.sum(both & (np.abs(sparse - truth) > 1e-9)))
    if n_disagree:
        problems.append(f"{n_disagree} labels present in both CSVs differ between them")

    results = {}
    val_rows_ref = None
    pixels = None
    for spec in args.prepared:
        strategy, _, path = spec.partition("=")
        meta, t = load(path)
        names = json.loads(meta.get("coordinate_names", "[]"))
        if names != coords:
            problems.append(f"{strategy}: coordinate_names metadata {names[:2]}... != the CSV's")
        side = int(meta.get("side", 0))
        for s in SPLITS:
            n = t[f"{s}.images"].shape[0]
            for k in FIELDS:
                a = t[f"{s}.{k}"]
                want = {"images": (n, side, side), "source_rows": (n,)}.get(k, (n, n_coords))
                if a.dtype != DTYPES[k] or a.shape != want:
                    problems.append(f"{strategy}: {s}.{k} is {a.dtype}{list(a.shape)}, "
                                    f"expected {np.dtype(DTYPES[k])}{list(want)}")
        if pixels is None:
            pixels = parse_images(sparse_df["Image"], side)

        tr_rows = t["train.source_rows"].astype(np.int64)
        va_rows = t["val.source_rows"].astype(np.int64)
        if val_rows_ref is None:
            val_rows_ref = va_rows
        elif not np.array_equal(val_rows_ref, va_rows):
            problems.append(f"{strategy}: validation rows differ from the first strategy's")
        if np.intersect1d(tr_rows, va_rows).size:
            problems.append(f"{strategy}: a row is in both training and validation")

        r = {"strategy": strategy}
        for s, rows in (("train", tr_rows), ("val", va_rows)):
            lab = t[f"{s}.labelled"].astype(bool)
            mask = t[f"{s}.loss_mask"].astype(bool)
            tgt = t[f"{s}.targets"].astype(np.float64)
            src = sparse[rows]
            if not np.array_equal(lab, ~np.isnan(src)):
                problems.append(f"{strategy}: {s}.labelled differs from the sparse CSV's labels")
            if not np.array_equal(tgt[lab], src[lab].astype(np.float32).astype(np.float64)):
                problems.append(f"{strategy}: {s}.targets differ from the sparse CSV's labels")
            if not np.array_equal(t[f"{s}.images"].reshape(len(rows), -1), pixels[rows]):
                problems.append(f"{strategy}: {s}.images differ from the sparse CSV's images")
            if np.any(lab & ~mask):
                problems.append(f"{strategy}: {s} has real labels outside the loss mask")
            if not np.all(np.isfinite(tgt)):
                problems.append(f"{strategy}: {s}.targets hold non-finite values")
            if np.any(tgt[~lab & ~mask] != 0):
                problems.append(f"{strategy}: {s} has unlabelled, masked targets that are not 0")
            if s == "val" and np.any(~lab & mask):
                problems.append(f"{strategy}: validation has filled labels")
        lab = t["train.labelled"].astype(bool)
        mask = t["train.loss_mask"].astype(bool)
        filled = ~lab & mask
        r.update(train_rows=len(tr_rows), real=int(lab.sum()), filled=int(filled.sum()),
                 masked=int((~mask).sum()), dropped=n_rows - len(va_rows) - len(tr_rows),
                 val_rows=len(va_rows), val_labels=int(t["val.labelled"].sum()))

        # The training split before any drop: every row not held out for validation.
        pool = np.setdiff1d(np.arange(n_rows), va_rows)
        if strategy == "drop":
            complete = pool[~np.isnan(sparse[pool]).any(axis=1)]
            if not np.array_equal(np.sort(tr_rows), complete):
                problems.append("drop: training rows are not exactly the complete training rows")
        elif not np.array_equal(np.sort(tr_rows), pool):
            problems.append(f"{strategy}: training rows are not every non-validation row")

        if strategy in ("mean", "median") and filled.any():
            tgt = t["train.targets"].astype(np.float64)
            ref = (np.nanmean if strategy == "mean" else np.nanmedian)(sparse[pool], axis=0)
            # fkp fills with its float32 labels' statistic, rounded to float32: allow for it.
            col = np.broadcast_to(ref.astype(np.float32).astype(np.float64), tgt.shape)
            diff = np.abs(tgt[filled] - col[filled])
            r["fill_value_max_diff"] = float(diff.max())
            if diff.max() > 1e-3:
                problems.append(f"{strategy}: fill values differ from the training split's "
                                f"{strategy} by up to {diff.max():.4g} px")
            tru = truth[tr_rows]
            err = np.where(filled, tgt - tru, np.nan)
            ok = filled & ~np.isnan(tru)
            r["scored"] = int(ok.sum())
            r["no_truth"] = int((filled & np.isnan(tru)).sum())
            r["rmse"] = rmse(err[ok])
            r["rmse_kp"] = {kp: rmse(err[:, 2 * k:2 * k + 2][ok[:, 2 * k:2 * k + 2]])
                            for k, kp in enumerate(keypoints)}
            r["scored_kp"] = {kp: int(ok[:, 2 * k:2 * k + 2].sum())
                              for k, kp in enumerate(keypoints)}

        side_json = os.path.join(os.path.dirname(path), "prepare.json")
        if os.path.exists(side_json):
            pj = json.load(open(side_json))
            for ours, theirs in (("train_rows", "train_rows"), ("real", "real_labels"),
                                 ("filled", "filled_labels"), ("masked", "masked_labels"),
                                 ("dropped", "dropped_rows"), ("val_rows", "val_rows"),
                                 ("val_labels", "val_labels")):
                if theirs in pj and pj[theirs] != r[ours]:
                    problems.append(f"{strategy}: prepare.json {theirs}={pj[theirs]}, "
                                    f"the tensors say {r[ours]}")
        results[strategy] = r

    # Baseline: predict the training split's median (from the sparse labels) for every label.
    baseline = None
    if val_rows_ref is not None:
        pool = np.setdiff1d(np.arange(n_rows), val_rows_ref)
        med = np.nanmedian(sparse[pool], axis=0)
        tru = truth[pool]
        err = tru - med
        have = ~np.isnan(tru)
        real = have & ~np.isnan(sparse[pool])
        baseline = {
            "all": rmse(err[have]), "all_n": int(have.sum()),
            "real": rmse(err[real]), "real_n": int(real.sum()),
            "all_kp": {kp: rmse(err[:, 2 * k:2 * k + 2][have[:, 2 * k:2 * k + 2]])
                       for k, kp in enumerate(keypoints)},
            "real_kp": {kp: rmse(err[:, 2 * k:2 * k + 2][real[:, 2 * k:2 * k + 2]])
                        for k, kp in enumerate(keypoints)},
        }

    print(f"## fkp prepare: {os.path.basename(args.sparse)} ({n_rows} rows), "
          f"truth {os.path.basename(args.full)}\n")
    rows = []
    for s, r in results.items():
        rows.append([s, r["train_rows"], r["real"], r["filled"], r["masked"], r["dropped"],
                     r["val_rows"], r["val_labels"], r.get("rmse"), r.get("scored")])
    print(table(["strategy", "training rows", "real training labels", "filled labels",
                 "masked labels", "rows dropped", "validation rows", "validation labels",
                 "fill RMSE (px)", "filled labels scored"], rows))
    if baseline:
        print(f"\nBaseline, the training split's median predicted for every label of the "
              f"training rows: RMSE {baseline['all']:.3f} px over all {baseline['all_n']} true "
              f"labels in the full file; {baseline['real']:.3f} px over the "
              f"{baseline['real_n']} real (sparse-file) labels.")
    filling = [s for s in ("mean", "median") if "rmse" in results.get(s, {})]
    if filling:
        print("\nRMSE in pixels, per keypoint: sqrt(mean of squared x and y errors) over its "
              "filled coordinates (fill columns) or over all / real labels (baseline columns).\n")
        rows = []
        ref = results[filling[0]]
        for kp in keypoints:
            row = [kp, ref["scored_kp"][kp]]
            row += [results[s]["rmse_kp"][kp] for s in filling]
            if baseline:
                row += [baseline["all_kp"][kp], baseline["real_kp"][kp]]
            rows.append(row)
        row = ["all", ref["scored"]] + [results[s]["rmse"] for s in filling]
        if baseline:
            row += [baseline["all"], baseline["real"]]
        rows.append(row)
        header = ["keypoint", "filled coords scored"] + [f"{s} fill RMSE" for s in filling]
        if baseline:
            header += ["median baseline, all labels", "median baseline, real labels"]
        print(table(header, rows))
        for s in filling:
            if results[s]["no_truth"]:
                print(f"\n{s}: {results[s]['no_truth']} filled values have no truth in the "
                      f"full file and are not scored.")
    print("\nChecks against the CSVs: " + ("all passed." if not problems else "FAILED"))
    for p in problems:
        print(f"- {p}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "baseline": baseline, "problems": problems}, f,
                      indent=1)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
