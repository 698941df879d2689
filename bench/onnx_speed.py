#!/usr/bin/env python3
"""Inference speed of a trained fkp network in ONNX Runtime and in PyTorch (eval mode),
on the same faces, for bench/onnx_speed.sh.

Usage:
  bench/onnx_speed.py --entry DIR --onnx FILE --faces FILE.u8 --side 96
                      [--batch 64] [--threads 2] [--repeats 3] [--expected FILE.csv]

DIR is the train stage's entry data folder (model.json, model.safetensors); FILE the
model `fkp export --no-tta` wrote from it; FILE.u8 the faces, grey bytes, one
side x side face after another. Both runtimes predict every face in batches of --batch
(the last one may be smaller), after one untimed warm-up batch; the best of --repeats
passes counts. ONNX Runtime: CPU, intra_op_num_threads = --threads, sequential.
PyTorch: the network rebuilt from model.json by bench/torch_from_checkpoint.py,
torch.set_num_threads(--threads), eval mode, inference_mode, pixels / 255 in and
output * scale + offset out, as model.json says (the ONNX model does both itself).

Prints `RESULT runtime=onnxruntime img_per_s=...` and `RESULT runtime=torch ...`, and
with --expected (fkp predict's CSV for the same faces) the largest |difference| of each
from fkp, in pixels.
"""
import argparse
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def batches(faces, batch):
    return [faces[i:i + batch] for i in range(0, len(faces), batch)]


def best_pass(run, chunks, repeats):
    run(chunks[0])  # warm-up
    best = float("inf")
    outputs = None
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = [run(c) for c in chunks]
        best = min(best, time.perf_counter() - started)
    return best, np.concatenate(outputs)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entry", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--faces", required=True)
    parser.add_argument("--side", type=int, default=96)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--expected")
    args = parser.parse_args()

    faces = np.fromfile(args.faces, dtype=np.uint8).reshape(-1, 1, args.side, args.side).astype(np.float32)
    chunks = batches(faces, args.batch)
    expected = None
    if args.expected:
        with open(args.expected, newline="") as f:
            rows = list(csv.reader(f))[1:]
        expected = np.array([[float(v) for v in row] for row in rows])

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    seconds, got = best_pass(lambda x: session.run(["keypoints"], {"image": x})[0], chunks, args.repeats)
    report("onnxruntime " + ort.__version__, len(faces), seconds, got, expected)

    import torch
    from torch_from_checkpoint import load_network

    torch.set_num_threads(args.threads)
    net, meta = load_network(args.entry)
    scaling = meta["scaling"]

    def torch_run(x):
        with torch.inference_mode():
            y = net(torch.from_numpy(x) / scaling["input_divisor"])
        return y.numpy() * scaling["output_scale"] + scaling["output_offset"]

    seconds, got = best_pass(torch_run, chunks, args.repeats)
    report("torch " + torch.__version__, len(faces), seconds, got, expected)


def report(runtime, count, seconds, got, expected):
    line = f"RESULT runtime={runtime.split()[0]} version={runtime.split()[1]} faces={count} " \
           f"seconds={seconds:.4f} img_per_s={count / seconds:.1f}"
    if expected is not None:
        line += f" max_abs_vs_fkp={np.abs(got.astype(np.float64) - expected).max():.2e}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
