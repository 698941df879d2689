#!/usr/bin/env python3
"""Anchor for fkp's ingest stage: the same job done the plain pandas way.

Reads a Kaggle-layout facial-keypoints CSV (30 coordinate columns, then
`Image` with 9216 space-separated 0-255 ints), turns `Image` into a uint8
array, and writes one Parquet file (zstd) holding:
  - `row`: the 0-based data row number (uint32),
  - the 30 coordinate columns as float32 (null where the label is missing),
  - `image`: fixed_size_binary(9216), the 96x96 pixels row by row.

Usage: ingest_pandas.py INPUT.csv OUTPUT.parquet [--parse split|apply|fromstring]

--parse picks how `Image` is split into numbers:
  split      np.array(df.Image.str.split().tolist(), dtype=np.uint8)   (default)
  apply      df.Image.apply(lambda s: np.array(s.split(), dtype=np.uint8))
  fromstring np.fromstring(s, dtype=np.uint8, sep=" ") per row (classic Kaggle
             tutorial idiom, much faster)
"""
import argparse
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

N_PIX = 96 * 96


def parse_images(images: pd.Series, how: str) -> np.ndarray:
    if how == "split":
        arr = np.array(images.str.split().tolist(), dtype=np.uint8)
    elif how == "apply":
        arr = np.vstack(images.apply(lambda s: np.array(s.split(), dtype=np.uint8)).to_list())
    elif how == "fromstring":
        arr = np.vstack([np.fromstring(s, dtype=np.uint8, sep=" ") for s in images])
    else:
        raise ValueError(how)
    if arr.ndim != 2 or arr.shape[1] != N_PIX:
        sys.exit(f"Image column: expected {N_PIX} values per row, got shape {arr.shape}")
    return arr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--parse", choices=["split", "apply", "fromstring"], default="split")
    ap.add_argument("-v", "--verbose", action="store_true", help="print per-step timings")
    args = ap.parse_args()

    t0 = time.perf_counter()
    df = pd.read_csv(args.input)
    t1 = time.perf_counter()
    coord_cols = [c for c in df.columns if c != "Image"]
    if len(coord_cols) != 30 or "Image" not in df.columns:
        sys.exit(f"expected 30 coordinate columns and Image, got {list(df.columns)}")
    pixels = parse_images(df["Image"], args.parse)
    t2 = time.perf_counter()

    n = len(df)
    columns = {"row": pa.array(np.arange(n, dtype=np.uint32))}
    for c in coord_cols:
        columns[c] = pa.array(df[c].to_numpy(dtype=np.float32), type=pa.float32(),
                              from_pandas=True)  # NaN -> null
    columns["image"] = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(N_PIX), n, [None, pa.py_buffer(np.ascontiguousarray(pixels))])
    table = pa.table(columns)
    pq.write_table(table, args.output, compression="zstd")
    t3 = time.perf_counter()

    if args.verbose:
        print(f"rows={n} read_csv={t1 - t0:.3f}s parse_image({args.parse})={t2 - t1:.3f}s "
              f"arrow+parquet={t3 - t2:.3f}s total={t3 - t0:.3f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
