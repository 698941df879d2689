#!/usr/bin/env python3
"""PyTorch CPU training- and inference-speed reference for fkp's dfdx models.

Training (default): one step = forward + MSE loss + backward + Adam update on a random batch
of 1x96x96 images with 30 targets (the Kaggle facial-keypoints shape).

    python bench/torch_train_speed.py --model lenet --batch 64 --threads 2 --steps 5

Inference (--inference): the same network in eval mode (batch norm on its running statistics,
dropout off) under torch.inference_mode(); one step = one forward pass of a random batch.
The --warmup batches (default 1) run untimed first, then --steps timed batches.

    python bench/torch_train_speed.py --model lenet --inference --batch 64 --threads 2 --steps 20

Prints per-step times and a final line:
    RESULT model=lenet mode=train batch=64 threads=2 steps=5 img_per_s=... s_per_step=...
           peak_rss_mib=... macs_per_img=...
(mode=inference with --inference). peak_rss_mib is the process's peak (ru_maxrss), the torch
import included. macs_per_img: the forward pass's multiply-adds for ONE 1 x size x size image,
counted by forward hooks on every Conv2d (output elements x in-channels/groups x kernel area)
and Linear (in x out features); bias adds, batch norm, activations, pooling and residual adds
are not counted (they are a few % of the total). FLOPs = 2 x MACs; a training step is about
3x the forward (backward = input and weight gradients, 2x).

Install: PyPI has no CPU-only torch wheel for Linux; `pip install torch==2.15.0` pulls the
CUDA build (~0.5 GB wheel + ~3 GB nvidia-* wheels, needed even to import on CPU).

Models (defined here, no torchvision needed):
  lenet     conv3x3(32) ReLU maxpool2 drop.1 | conv2x2(64) ReLU maxpool2 drop.2 |
            conv2x2(128) ReLU maxpool2 drop.3 | flatten | 500 ReLU drop.5 | 500 ReLU | 30
  resnet18  torchvision's ResNet-18 layout, 1 input channel, 30 outputs (11,185,630 params)
  resnet50  torchvision's ResNet-50 layout (bottlenecks), 1 input channel, 30 outputs
            (23,563,230 params)
  alexnet   fkp's AlexNet: torchvision's features with batch norm after each conv (convs
            without bias, as dfdx's), dropout .5, 4096-4096 dense head (23,557,982 params)
  darknet53 YOLOv3's backbone: conv-BN-LeakyReLU(0.1) units, 1-2-8-8-4 residual blocks,
            global average pool, one dense layer (40,615,102 params)

Parameter counts equal fkp's for the same model (`fkp run` prints them when training).
"""

import argparse
import contextlib
import json
import resource
import sys
import time

import torch
from torch import nn


def lenet(outputs: int, h: int = 96, w: int = 96) -> nn.Module:
    def side(x: int) -> int:
        return (((x - 2) // 2 - 1) // 2 - 1) // 2

    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.1),
        nn.Conv2d(32, 64, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Conv2d(64, 128, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(128 * side(h) * side(w), 500), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(500, 500), nn.ReLU(),
        nn.Linear(500, outputs),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


def resnet18(outputs: int) -> nn.Module:
    layers = [
        nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, outputs)]
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


def resnet50(outputs: int) -> nn.Module:
    layers = [
        nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, outputs)]
    return nn.Sequential(*layers)


def alexnet(outputs: int, size: int = 96) -> nn.Module:
    def unit(cin, cout, k, s, p):
        return [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    features = nn.Sequential(
        *unit(1, 64, 11, 4, 2), nn.MaxPool2d(3, 2),
        *unit(64, 192, 5, 1, 2), nn.MaxPool2d(3, 2),
        *unit(192, 384, 3, 1, 1), *unit(384, 256, 3, 1, 1), *unit(256, 256, 3, 1, 1),
        nn.MaxPool2d(3, 2), nn.Flatten(),
    )
    flat = features(torch.zeros(1, 1, size, size)).shape[1]
    return nn.Sequential(
        features,
        nn.Dropout(0.5), nn.Linear(flat, 4096), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, outputs),
    )


def darknet_unit(cin: int, cout: int, k: int, s: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)
    )


class DarknetBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(darknet_unit(c, c // 2, 1, 1), darknet_unit(c // 2, c, 3, 1))

    def forward(self, x):
        return x + self.body(x)


def darknet53(outputs: int) -> nn.Module:
    layers = [darknet_unit(1, 32, 3, 1)]
    cin = 32
    for cout, blocks in [(64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)]:
        layers.append(darknet_unit(cin, cout, 3, 2))
        layers += [DarknetBlock(cout) for _ in range(blocks)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, outputs)]
    return nn.Sequential(*layers)


def forward_macs(model: nn.Module, size: int, device: str) -> int:
    """Multiply-adds of one forward pass of one 1 x size x size image (Conv2d and Linear only)."""
    total = 0

    def conv(m, inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * k

    def linear(m, inp, out):
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["lenet", "resnet18", "resnet50", "alexnet", "darknet53"], default="lenet")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (batches with --inference)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--inference", action="store_true",
                    help="time eval-mode forward passes under torch.inference_mode() instead of training")
    ap.add_argument("--outputs", type=int, default=30)
    ap.add_argument("--size", type=int, default=96, help="input height = width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="also print the result as JSON")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (for bench/cuda/run-on-device.sh)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(a.seed)

    builders = {"lenet": lambda: lenet(a.outputs, a.size, a.size),
                "resnet18": lambda: resnet18(a.outputs), "resnet50": lambda: resnet50(a.outputs),
                "alexnet": lambda: alexnet(a.outputs, a.size),
                "darknet53": lambda: darknet53(a.outputs)}
    model = builders[a.model]()
    model = model.to(a.device)
    model.train()
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.MSELoss()
    x = torch.randn(a.batch, 1, a.size, a.size, device=a.device)
    y = torch.randn(a.batch, a.outputs, device=a.device)
    macs = forward_macs(model, a.size, a.device)
    mode = "inference" if a.inference else "train"
    print(
        f"torch {torch.__version__} model={a.model} mode={mode} params={params} "
        f"macs_per_img={macs} threads={torch.get_num_threads()} batch={a.batch}",
        flush=True,
    )

    # one step of the mode; its .item() also waits for the GPU, so step times are real
    if a.inference:
        model.eval()
        context = torch.inference_mode()

        def step() -> str:
            return f"out[0,0] {model(x)[0, 0].item():.4f}"
    else:
        context = contextlib.nullcontext()

        def step() -> str:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return f"loss {loss.item():.4f}"

    with context:
        t0 = time.perf_counter()
        for i in range(a.warmup + a.steps):
            if i == a.warmup:
                t0 = time.perf_counter()
            ts = time.perf_counter()
            what = step()
            print(f"  step {i}: {what} {time.perf_counter() - ts:.3f}s", flush=True)
        dt = time.perf_counter() - t0

    res = {
        "model": a.model,
        "mode": mode,
        "batch": a.batch,
        "threads": a.threads,
        "steps": a.steps,
        "img_per_s": round(a.batch * a.steps / dt, 2),
        "s_per_step": round(dt / a.steps, 4),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "macs_per_img": macs,
        "params": params,
        "torch": torch.__version__,
    }
    print(
        "RESULT " + " ".join(f"{k}={res[k]}" for k in
                             ["model", "mode", "batch", "threads", "steps", "img_per_s",
                              "s_per_step", "peak_rss_mib", "macs_per_img"])
    )
    if a.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
