#!/usr/bin/env python3
"""Runs models that `fkp export` wrote in ONNX Runtime, for tests/onnx.rs.

Usage: check.py JOBS.json

JOBS.json is a list of jobs, each
  {"label": str, "model": path, "images": path, "count": n, "side": s,
   "expected": path, "coords": c}
where `images` holds n grey s x s faces as bytes (row-major) and `expected` the
n x c coordinates fkp predicted for them, float32 little-endian. For each job
the model goes through onnx.checker (full check, with shape inference), then
ONNX Runtime (CPU, 2 threads) predicts all n faces in one batch and the first
face alone (the batch is dynamic), in the model's own input type.

Prints one JSON object per job: label, max_abs (largest |ONNX Runtime - fkp|,
pixels), single_max_abs (the same for the lone face), input_type, output_shape,
metadata (the model's metadata_props) and opset.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    jobs = json.load(open(sys.argv[1]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    for job in jobs:
        model = onnx.load(job["model"])
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
        (given,) = session.get_inputs()
        n, side, coords = job["count"], job["side"], job["coords"]
        pixels = np.fromfile(job["images"], dtype=np.uint8).reshape(n, 1, side, side)
        dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}[given.type]
        expected = np.fromfile(job["expected"], dtype="<f4").reshape(n, coords)
        (got,) = session.run(["keypoints"], {"image": pixels.astype(dtype)})
        (single,) = session.run(["keypoints"], {"image": pixels[:1].astype(dtype)})
        print(json.dumps({
            "label": job["label"],
            "max_abs": float(np.abs(got.astype(np.float64) - expected).max()),
            "single_max_abs": float(np.abs(single[0].astype(np.float64) - expected[0]).max()),
            "input_type": given.type,
            "input_shape": [str(d) for d in given.shape],
            "output_shape": list(got.shape),
            "metadata": {p.key: p.value for p in model.metadata_props},
            "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
        }), flush=True)


if __name__ == "__main__":
    main()
