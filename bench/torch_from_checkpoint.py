#!/usr/bin/env python3
"""Load an fkp checkpoint into PyTorch and check it predicts what `fkp predict` does.

Usage:
  bench/torch_from_checkpoint.py PIPELINE.toml --faces FILE [--fkp BIN] [--tolerance PX]

The pipeline must have been trained (`fkp run PIPELINE.toml`). The script
  1. finds the train stage's entry with `fkp status --json` and reads its
     data/model.json (the network as a graph, and how pixels are scaled) and
     data/model.safetensors;
  2. builds the same network as torch.nn modules, named like fkp's tensors
     (`layers.4.0.body.0.weight`), from the graph alone: nothing is specific to
     one architecture, so presets and custom graphs both work;
  3. loads the weights (batch norm's `scale` is torch's `weight`);
  4. predicts FILE (Kaggle layout, .csv or .csv.gz) with input = pixels / 255
     and pixels = output * scale + offset, as model.json says;
  5. runs `fkp predict PIPELINE.toml --input FILE` and compares, coordinate by
     coordinate. Exit 0 when the largest difference is within --tolerance
     (default 0.01 px), else 1.

Needs torch and numpy (bench/.venv-torch has them); safetensors files are read
with numpy, without the safetensors package.
"""
import argparse
import csv
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
from torch import nn

DTYPES = {"F32": np.float32, "F64": np.float64}


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class BlockUse(nn.Module):
    """One use of a block: body, optional projection shortcut, layers after the sum."""

    def __init__(self, body, shortcut, projection, after_add):
        super().__init__()
        self.body = body
        self.shortcut = shortcut
        self.projection = projection
        self.after_add = after_add

    def forward(self, x):
        y = self.body(x)
        if self.shortcut == "identity":
            y = y + x
        elif self.shortcut == "projection":
            y = y + self.projection(x)
        return self.after_add(y)


class Network(nn.Module):
    def __init__(self, channels, layers, head, output):
        super().__init__()
        self.channels = channels
        self.layers = layers
        self.head = head
        self.output = output

    def forward(self, x):
        x = x.repeat(1, self.channels, 1, 1)
        x = self.head(self.layers(x))
        return self.output(x.flatten(1))


class Builder:
    """Builds modules from the graph, sizing each from its weights' shapes."""

    def __init__(self, weights):
        self.weights = weights

    def shape(self, name):
        return tuple(self.weights[name].shape)

    def sequence(self, prefix, layers):
        return nn.Sequential(*[self.layer(f"{prefix}.{i}", layer) for i, layer in enumerate(layers)])

    def layer(self, name, layer):
        kind = layer["kind"]
        if kind == "conv":
            out, inp, k, _ = self.shape(f"{name}.weight")
            return nn.Conv2d(inp, out, k, stride=layer["stride"], padding=layer["padding"], bias=layer["bias"])
        if kind == "batchnorm":
            (n,) = self.shape(f"{name}.scale")
            return FlexibleBatchNorm(n, eps=1e-5)
        if kind == "relu":
            return nn.ReLU()
        if kind == "leaky_relu":
            return nn.LeakyReLU(layer["slope"])
        if kind == "maxpool":
            return nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"])
        if kind == "avgpool":
            return nn.AvgPool2d(layer["kernel"], layer["stride"], layer["padding"])
        if kind == "global_avg_pool":
            return GlobalAvgPool()
        if kind == "dropout":
            return nn.Dropout(layer["p"])
        if kind == "flatten":
            return nn.Flatten()
        if kind == "dense":
            out, inp = self.shape(f"{name}.weight")
            return nn.Linear(inp, out)
        if kind == "block":
            uses = []
            for r, use in enumerate(layer["uses"]):
                prefix = f"{name}.{r}"
                shortcut = use["shortcut"]
                uses.append(
                    BlockUse(
                        self.sequence(f"{prefix}.body", use["body"]),
                        shortcut["kind"],
                        self.sequence(f"{prefix}.projection", shortcut.get("layers", [])),
                        self.sequence(f"{prefix}.after_add", use.get("after_add", [])),
                    )
                )
            return nn.Sequential(*uses)
        raise SystemExit(f"unknown layer kind in model.json: {kind}")


class FlexibleBatchNorm(nn.BatchNorm1d):
    """Batch norm over the channels of a map or the features of flat input, as
    fkp's one batch-norm layer does (inference: running statistics)."""

    def forward(self, x):
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                        training=False, eps=self.eps)


def torch_state(weights):
    """fkp's tensor names to torch's: batch norm's scale is torch's weight."""
    state = {}
    for name, tensor in weights.items():
        if name.endswith(".scale"):
            base = name[: -len(".scale")]
            state[f"{base}.weight"] = tensor
            state[f"{base}.num_batches_tracked"] = torch.tensor(0)
        else:
            state[name] = tensor
    return state


def load_network(data):
    """The network of a train entry's `data` folder, in inference mode, with its model.json."""
    meta = json.load(open(os.path.join(data, "model.json")))
    weights = read_safetensors(os.path.join(data, "model.safetensors"))
    graph = meta["spec"]["graph"]
    builder = Builder(weights)
    out, inp = builder.shape("output.weight")
    net = Network(graph["channels"], builder.sequence("layers", graph["layers"]),
                  builder.sequence("head", graph["head"]), nn.Linear(inp, out))
    net.load_state_dict(torch_state(weights), strict=True)
    net.eval()
    return net, meta


def read_faces(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    images = np.array([[int(p) for p in row["Image"].split()] for row in rows], dtype=np.float32)
    return images


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline")
    parser.add_argument("--faces", required=True, help="Kaggle-layout file to predict")
    parser.add_argument("--fkp", default=os.path.expanduser(
        os.environ.get("CARGO_TARGET_DIR", "~/.cache/fkp-target") + "/release/fkp"))
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest allowed difference, pixels")
    args = parser.parse_args()

    status = json.loads(subprocess.run([args.fkp, "status", "--json", args.pipeline],
                                       check=True, capture_output=True, text=True).stdout)
    train = next(s for s in status["pipelines"][0]["stages"] if s["stage"] == "train")
    if train["state"] != "cached" or not train.get("entry"):
        raise SystemExit(f"the train stage is {train['state']}: run `fkp run {args.pipeline}` first")
    net, meta = load_network(os.path.join(train["entry"], "data"))
    graph = meta["spec"]["graph"]

    side = meta["spec"]["side"]
    scaling = meta["scaling"]
    images = read_faces(args.faces)
    x = torch.from_numpy(images / scaling["input_divisor"]).float().view(-1, 1, side, side)
    with torch.no_grad():
        ours = net(x).numpy() * scaling["output_scale"] + scaling["output_offset"]

    with tempfile.TemporaryDirectory() as tmp:
        output = os.path.join(tmp, "predictions.csv")
        subprocess.run([args.fkp, "-q", "predict", args.pipeline, "--input", args.faces, "--output", output],
                       check=True)
        with open(output, newline="") as f:
            rows = list(csv.DictReader(f))
    names = meta["coordinate_names"]
    theirs = np.array([[float(row[n]) for n in names] for row in rows], dtype=np.float64)
    if theirs.shape != ours.shape:
        raise SystemExit(f"fkp predict gave {theirs.shape}, PyTorch {ours.shape}")
    diff = np.abs(theirs - ours)
    parameters = sum(p.numel() for p in net.parameters())
    print(f"{graph['name']}: {parameters:,} parameters in PyTorch, fkp's model.json says {meta['parameters']:,}")
    print(f"{len(rows)} faces x {len(names)} coordinates: largest difference {diff.max():.6f} px, "
          f"mean {diff.mean():.6f} px (tolerance {args.tolerance} px)")
    ok = diff.max() <= args.tolerance and parameters == meta["parameters"]
    print("MATCH" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
