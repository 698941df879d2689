#!/usr/bin/env python3
"""Cut the 300-face samples in datasets/ from the shared face data.

Rule: with N data rows (3462) and K = 300, keep data row i = (k * N) // K for
k = 0 .. K-1 (0-based, header not counted). That is 300 evenly spaced rows
(every 11th or 12th), in their original order. The SAME indices are taken from
the sparse file and from the full one, so row j of faces300-sparse.csv.gz is
the same face as row j of faces300-full.csv.gz.

Each chosen line is copied byte for byte (number formatting, empty fields for
missing labels and line ending unchanged); the header line is kept. Output is
written with Python's gzip at level 9 and mtime=0, so reruns give identical
files.

Usage (stdlib only):
    python3 datasets/make_sample.py [SHARED_DATA_DIR] [OUT_DIR]
SHARED_DATA_DIR defaults to $FKP_SHARED_DATA or ../shared/data next to the
repo; OUT_DIR defaults to this script's folder.
"""
import gzip
import os
import sys

K = 300
PAIRS = [
    ("faces15-train-sparse.csv.gz", "faces300-sparse.csv.gz"),
    ("faces15-train.csv.gz", "faces300-full.csv.gz"),
]


def read_lines(path):
    with gzip.open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def is_complete(line):
    fields = line.rstrip(b"\r\n").split(b",")
    return all(f != b"" for f in fields[:30])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(here)
    default_src = os.environ.get(
        "FKP_SHARED_DATA", os.path.join(os.path.dirname(repo), "shared", "data")
    )
    src_dir = sys.argv[1] if len(sys.argv) > 1 else default_src
    out_dir = sys.argv[2] if len(sys.argv) > 2 else here

    indices = None
    n_rows = None
    for src_name, out_name in PAIRS:
        lines = read_lines(os.path.join(src_dir, src_name))
        header, rows = lines[0], lines[1:]
        if n_rows is None:
            n_rows = len(rows)
            indices = [(k * n_rows) // K for k in range(K)]
            print(f"rule: data row i = (k * {n_rows}) // {K} for k = 0..{K - 1} "
                  f"(0-based, header not counted)")
            print(f"first indices: {indices[:8]} ... last: {indices[-3:]}")
        elif len(rows) != n_rows:
            sys.exit(f"{src_name} has {len(rows)} rows, expected {n_rows}")
        if not header.startswith(b"left_eye_center_x,"):
            sys.exit(f"{src_name}: unexpected header")
        chosen = [rows[i] for i in indices]
        out_path = os.path.join(out_dir, out_name)
        with open(out_path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", compresslevel=9,
                               fileobj=raw, mtime=0) as gz:
                gz.write(header)
                gz.writelines(chosen)
        complete = sum(is_complete(r) for r in chosen)
        print(f"{out_name}: {len(chosen)} rows, {complete} complete "
              f"({100.0 * complete / len(chosen):.1f}%), "
              f"{os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
