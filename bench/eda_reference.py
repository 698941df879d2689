#!/usr/bin/env python3
"""Independent reference for fkp's EDA numbers, computed the plain pandas/numpy way.

Usage: eda_reference.py INPUT.csv[.gz] OUTPUT.json

Reads a Kaggle-layout facial-keypoints CSV (30 coordinate columns `<keypoint>_x`, `<keypoint>_y`,
then `Image` = 9216 space-separated 0-255 ints, 96x96) with `pandas.read_csv` and writes JSON:

  rows                  number of data rows
  coordinate_names      the 30 coordinate columns, in file order
  keypoint_names        the 15 keypoints (coordinate names without `_x`), in file order
  coordinates           one object per coordinate, in order: name, count, missing, mean,
                        std (ddof=1), min, q25, median, q75, max -- exactly `Series.describe()`
                        (linear-interpolation quantiles) on the CSV's float64 values
  correlation           30x30 Pearson matrix, `df[coords].corr()` (pairwise-complete rows),
                        NaN written as null
  patterns              [{"present": [bool x15], "rows": n}] for every set of present keypoints
                        (present = both x and y present), rows descending, ties by the pattern
                        (present-first, keypoint order) so the output is deterministic
  image_means           describe() of the per-image pixel mean (numpy, float64)
  image_stds            describe() of the per-image pixel std, ddof=1 (numpy, float64)
  brightness_histogram  256 counts of grey levels over all pixels of all images

Floats are written at full precision (Python's repr, what json.dump does by default).
"""
import json
import math
import sys

import numpy as np
import pandas as pd

SIDE = 96
N_PIX = SIDE * SIDE
DESCRIBE_KEYS = [("count", "count"), ("mean", "mean"), ("std", "std"), ("min", "min"),
                 ("25%", "q25"), ("50%", "median"), ("75%", "q75"), ("max", "max")]


def num(v):
    """A JSON-safe Python float (NaN/inf -> None)."""
    v = float(v)
    return v if math.isfinite(v) else None


def describe(series: pd.Series) -> dict:
    d = series.describe()
    out = {}
    for src, dst in DESCRIBE_KEYS:
        out[dst] = int(d[src]) if dst == "count" else num(d[src])
    out["missing"] = int(len(series) - int(d["count"]))
    # field order: count, missing, mean, std, min, q25, median, q75, max
    return {k: out[k] for k in ["count", "missing", "mean", "std", "min", "q25", "median",
                                "q75", "max"]}


def parse_images(images: pd.Series) -> np.ndarray:
    rows = []
    for i, s in enumerate(images):
        if not isinstance(s, str):
            sys.exit(f"row {i}: Image is empty")
        a = np.array(s.split(), dtype=np.int64)
        if a.size != N_PIX:
            sys.exit(f"row {i}: Image has {a.size} values, expected {N_PIX}")
        if a.min() < 0 or a.max() > 255:
            sys.exit(f"row {i}: Image value outside 0-255")
        rows.append(a.astype(np.uint8))
    if not rows:
        return np.zeros((0, N_PIX), dtype=np.uint8)
    return np.vstack(rows)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    src, dst = sys.argv[1], sys.argv[2]

    df = pd.read_csv(src, dtype={"Image": str})
    if "Image" not in df.columns:
        sys.exit("no Image column")
    coords = [c for c in df.columns if c != "Image"]
    if len(coords) != 30:
        sys.exit(f"expected 30 coordinate columns, got {len(coords)}")
    for i in range(0, 30, 2):
        if not (coords[i].endswith("_x") and coords[i + 1].endswith("_y")
                and coords[i][:-2] == coords[i + 1][:-2]):
            sys.exit(f"columns {coords[i]}, {coords[i + 1]} are not an _x/_y pair")
    df[coords] = df[coords].astype(np.float64)
    keypoints = [coords[i][:-2] for i in range(0, 30, 2)]

    coordinates = [{"name": c, **describe(df[c])} for c in coords]

    corr = df[coords].corr()  # Pearson, pairwise-complete
    correlation = [[num(corr.iloc[i, j]) for j in range(30)] for i in range(30)]

    vals = df[coords].to_numpy()
    present = ~np.isnan(vals[:, 0::2]) & ~np.isnan(vals[:, 1::2])  # [n, 15]
    counts = {}
    for row in present:
        key = tuple(bool(b) for b in row)
        counts[key] = counts.get(key, 0) + 1
    patterns = [{"present": list(k), "rows": n}
                for k, n in sorted(counts.items(),
                                   key=lambda kv: (-kv[1], [not b for b in kv[0]]))]

    pix = parse_images(df["Image"])
    pixf = pix.astype(np.float64)
    image_means = describe(pd.Series(pixf.mean(axis=1)))
    image_stds = describe(pd.Series(pixf.std(axis=1, ddof=1)))
    hist = np.bincount(pix.ravel(), minlength=256)

    out = {
        "rows": int(len(df)),
        "coordinate_names": coords,
        "keypoint_names": keypoints,
        "coordinates": coordinates,
        "correlation": correlation,
        "patterns": patterns,
        "image_means": image_means,
        "image_stds": image_stds,
        "brightness_histogram": [int(x) for x in hist],
    }
    with open(dst, "w") as f:
        json.dump(out, f, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
