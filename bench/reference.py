#!/usr/bin/env python3
"""PyTorch reference figures for the work headstart does, on the same CPU threads.

What it measures (f32, torch.inference_mode(), models in eval(), 2 intra-op threads and
1 inter-op thread by default, i.e. the same two cores `just bench` uses):

1. Backbone forward alone, images/s, for ResNet-18 (torchvision, fc = Identity, so the output is
   the 512-d global-average-pool feature) and EfficientNet-Lite0 (defined below: torchvision has
   no Lite0), at batches 1, 8 and 32, in both memory formats (NCHW contiguous and channels_last).
   Each configuration: 2 warm-up batches, then --reps timed repetitions; a repetition runs
   enough batches to cover at least --min-images images (16: batch 1 runs 16 forwards, batch 8
   two, batch 32 one). Reported: median, min and max images/s over the repetitions.
   Weights are random: the speed of a forward does not depend on their values.
2. End-to-end extraction of the eval view (what `headstart extract --views 0` does): an
   ImageFolder over --data, PIL decode + convert('RGB'), Resize(256, bilinear) + CenterCrop(224)
   + ToTensor + Normalize(ImageNet), DataLoader batches of 32, ResNet-18 forward, features
   collected. Once with num_workers=0 (the plain 20-line script: decode and forward take turns
   in one process) and once with num_workers=1 (decode in a worker process, overlapping the
   forward), for both memory formats. A run is timed whole, DataLoader start-up (and the worker
   process start) included; median/min/max images/s over --reps runs.
3. A markdown table on stdout and in --out (default docs/benchmarks-reference.md), headed by the
   date, torch/torchvision versions, threads, CPU model and the exact command; all numbers as
   JSON in --json PATH if given (keys like "resnet18/channels_last/batch32" and
   "e2e/resnet18/nchw/workers1", each {"median", "min", "max", ...}).

Usage (from the repository root):

    just bench-reference                                   # uses ${PYTHON:-python3}
    PYTHON=/work/torchvenv/bin/python just bench-reference
    PYTHON=/path/to/venv/bin/python just bench-reference --reps 5 --json /tmp/ref.json
    just bench-reference python=/path/to/venv/bin/python --quick   # same, as a key=value word
    python3 bench/reference.py --quick                     # smoke test: batch 2, 1 rep, 8 images

`--quick` runs everything at tiny size (batch 2, reps 1, e2e-limit 8) and, unless --out is
given, does not overwrite docs/benchmarks-reference.md. The full run takes a few minutes of
both cores: do not run it while something else is being measured on the machine.

Needs only torch, torchvision and Pillow (which torchvision pulls in):
    pip install torch torchvision
(CPU-only wheels: pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu)
"""

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import datasets, transforms

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------------------------
# EfficientNet-Lite0 as a plain nn.Module (no torchvision equivalent).
# Lite = EfficientNet-B0 without squeeze-excitation, with ReLU6 instead of swish, and with the
# stem and head kept at 32 and 1280 channels. BN eps 1e-3 as in the TF original.
# TF "SAME" padding is approximated by symmetric padding k // 2: for stride 1 it is identical;
# for stride 2 on even sizes SAME pads (k//2 - 1, k//2) instead of (k//2, k//2), which shifts the
# window by one pixel but has the same output shape and the same cost, so it is the same for
# speed purposes (the numbers here are speed only, not features to compare with headstart's).
# ---------------------------------------------------------------------------------------------

BN_EPS = 1e-3

# (repeats, kernel, stride, expand, in, out)
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


def conv_bn_act(cin, cout, k, stride=1, groups=1, act=True):
    layers = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=BN_EPS),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] → kxk depthwise → 1x1 project; no squeeze-excitation."""

    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers.append(conv_bn_act(cin, mid, 1))
        layers.append(conv_bn_act(mid, mid, k, stride=stride, groups=mid))
        layers.append(conv_bn_act(mid, cout, 1, act=False))
        self.block = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """Output: the 1280-d global-average-pool of the head (the feature headstart caches)."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn_act(3, 32, 3, stride=2)
        blocks = []
        for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, stride if i == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn_act(320, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return torch.flatten(self.pool(x), 1)


def resnet18_features():
    model = torchvision.models.resnet18(weights=None)
    model.fc = nn.Identity()  # output = the 512-d global-average-pool
    return model


class HFFeatures(nn.Module):
    """A transformers vision model returning headstart's features: DINOv2 concat(CLS, mean of
    patch tokens) after the final LayerNorm; CLIP image_embeds."""

    def __init__(self, kind):
        super().__init__()
        import transformers  # only needed for these rows

        self.kind = kind
        if kind == "dinov2-small":
            cfg = transformers.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                            patch_size=14, image_size=518, layer_norm_eps=1e-6)
            self.model = transformers.Dinov2Model(cfg)
        else:
            cfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                num_attention_heads=12, patch_size=32, image_size=224,
                                                hidden_act="quick_gelu", projection_dim=512)
            self.model = transformers.CLIPVisionModelWithProjection(cfg)

    def forward(self, x):
        if self.kind == "dinov2-small":
            h = self.model(pixel_values=x).last_hidden_state
            return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=1)
        return self.model(pixel_values=x).image_embeds


def have_transformers():
    try:
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


MODELS = {
    "resnet18": resnet18_features,
    "efficientnet-lite0": EfficientNetLite0,
}
# Transformers rows (batch 32, NCHW only) when `transformers` is installed.
TRANSFORMERS = {
    "dinov2-small": lambda: HFFeatures("dinov2-small"),
    "clip-vit-b32": lambda: HFFeatures("clip-vit-b32"),
}
MODELS.update(TRANSFORMERS)
FORMATS = {
    "nchw": torch.contiguous_format,
    "channels_last": torch.channels_last,
}

# ---------------------------------------------------------------------------------------------


def summarise(rates, **extra):
    out = {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "reps": len(rates)}
    out.update(extra)
    return out


def build(name, fmt):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    if fmt == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    return model


DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def bench_forward(name, fmt, batch, reps, warmup, min_images, device="cpu", dtype="f32"):
    """On a GPU each batch is copied from host memory and the features copied back, as
    `headstart benchmark` does; the model and the batch are in `dtype` throughout."""
    model = build(name, fmt)
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=FORMATS[fmt])
    iters = max(1, math.ceil(min_images / batch))
    if device != "cpu":
        model = model.to(device=device, dtype=DTYPES[dtype])
        if fmt == "channels_last":
            model = model.to(memory_format=torch.channels_last)

        def run():
            xb = x.to(device=device, dtype=DTYPES[dtype]).contiguous(memory_format=FORMATS[fmt])
            return model(xb).float().cpu()
    else:
        def run():
            return model(x)
    with torch.inference_mode():
        for _ in range(warmup):
            feats = run()
        if device != "cpu":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(iters):
                feats = run()
            if device != "cpu":
                torch.cuda.synchronize()
            rates.append(iters * batch / (time.perf_counter() - t0))
    extra = {}
    if device != "cpu":
        extra["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    return summarise(rates, batch=batch, iters_per_rep=iters, features=int(feats.shape[1]), dtype=dtype, **extra)


def eval_transform():
    return transforms.Compose([
        transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),  # antialias: default
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def bench_e2e(data, fmt, workers, batch, reps, limit):
    dataset = datasets.ImageFolder(str(data), transform=eval_transform())  # PIL loader, convert('RGB')
    if limit:
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    n = len(dataset)
    model = build("resnet18", fmt)
    memfmt = FORMATS[fmt]
    with torch.inference_mode():
        model(torch.randn(batch, 3, 224, 224).contiguous(memory_format=memfmt))  # warm-up
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=workers)
            feats, labels = [], []
            for x, y in loader:
                feats.append(model(x.contiguous(memory_format=memfmt)))
                labels.append(y)
            feats = torch.cat(feats)
            rates.append(n / (time.perf_counter() - t0))
            assert feats.shape == (n, 512), feats.shape
    return summarise(rates, images=n, batch=batch, workers=workers)


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_rate(v):
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def markdown(results, header):
    lines = [header, ""]
    fwd = [(k, v) for k, v in results.items() if not k.startswith("e2e/")]
    e2e = [(k, v) for k, v in results.items() if k.startswith("e2e/")]
    if fwd:
        lines += [
            "Backbone forward alone (random input 224×224, f32, inference_mode, eval), images/s:",
            "",
            "| model | memory format | batch | median | min | max | timed per rep |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for k, v in fwd:
            parts = k.split("/")
            model, fmt = parts[0], parts[1]
            if len(parts) == 4:  # a GPU row: model/format/dtype/batchN
                fmt = f"{fmt}, {parts[2]}"
            lines.append(
                f"| {model} | {fmt} | {v['batch']} | **{fmt_rate(v['median'])}** | {fmt_rate(v['min'])} "
                f"| {fmt_rate(v['max'])} | {v['iters_per_rep'] * v['batch']} images |"
            )
        lines.append("")
    if e2e:
        v0 = e2e[0][1]
        lines += [
            f"End-to-end eval-view extraction (like `headstart extract --views 0`), ResNet-18, "
            f"{v0['images']} images, batch {v0['batch']}: PIL decode → Resize(256, bilinear) → "
            "CenterCrop(224) → ToTensor → Normalize → forward, timed whole (DataLoader start-up "
            "included), images/s:",
            "",
            "| memory format | DataLoader workers | median | min | max |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for k, v in e2e:
            _, _, fmt, _ = k.split("/")
            lines.append(
                f"| {fmt} | {v['workers']} | **{fmt_rate(v['median'])}** | {fmt_rate(v['min'])} | {fmt_rate(v['max'])} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring (head -40 bench/reference.py) for details.")
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/flowers"),
                   help="ImageFolder for the end-to-end run (default: ../shared/data/flowers)")
    p.add_argument("--out", default=None,
                   help="markdown output (default: docs/benchmarks-reference.md; with --quick: none)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write all numbers as JSON here")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per configuration (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up batches before timing (default 2)")
    p.add_argument("--min-images", type=int, default=16,
                   help="images timed per repetition at least: batch 1 runs this many forwards (default 16)")
    p.add_argument("--batches", default="1,8,32", help="forward batch sizes (default 1,8,32)")
    p.add_argument("--e2e-batch", type=int, default=32, help="end-to-end DataLoader batch (default 32)")
    p.add_argument("--e2e-limit", type=int, default=0, help="only the first N images end to end (default all)")
    p.add_argument("--models", default=",".join(MODELS), help=f"forward models (default {','.join(MODELS)}; "
                   "the transformers ones need `pip install transformers` and run at batch 32, NCHW only)")
    p.add_argument("--formats", default=",".join(FORMATS), help="memory formats (default nchw,channels_last)")
    p.add_argument("--workers", default="0,1", help="end-to-end DataLoader num_workers values (default 0,1)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2; interop 1)")
    p.add_argument("--skip-forward", action="store_true", help="only the end-to-end runs")
    p.add_argument("--skip-e2e", action="store_true", help="only the forward runs")
    p.add_argument("--quick", action="store_true", help="smoke test: batch 2, reps 1, e2e-limit 8")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: forward rows on the GPU, each batch "
                   "copied from host memory and the features back (as `headstart benchmark` does), TF32 off, "
                   "cudnn.benchmark on; every model at every batch and format")
    p.add_argument("--dtypes", default="f32", help="with --device cuda: comma-separated f32, f16, bf16 (default f32)")
    a = p.parse_args()
    if a.device != "cpu":
        if not torch.cuda.is_available():
            p.error(f"--device {a.device}: torch {torch.__version__} sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    dtypes = [d for d in a.dtypes.split(",") if d]
    for d in dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}; known: {', '.join(DTYPES)}")
        if d != "f32" and a.device == "cpu":
            p.error("--dtypes f16/bf16 need --device cuda")

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    if a.quick:
        a.batches, a.reps, a.e2e_limit, a.e2e_batch, a.min_images = "2", 1, 8, 2, 1
    if a.out is None and not a.quick:
        a.out = str(ROOT / "docs/benchmarks-reference.md")
    batches = [int(b) for b in a.batches.split(",") if b]
    models = [m for m in a.models.split(",") if m]
    formats = [f for f in a.formats.split(",") if f]
    workers = [int(w) for w in a.workers.split(",") if w]
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for f in formats:
        if f not in FORMATS:
            p.error(f"unknown memory format {f!r}; known: {', '.join(FORMATS)}")
    if not a.skip_e2e and not Path(a.data).is_dir():
        p.error(f"--data {a.data} is not a folder (an ImageFolder: one sub-folder per class); "
                "pass --data or --skip-e2e")

    command = shlex.join([sys.executable] + sys.argv)
    via = os.environ.get("BENCH_REFERENCE_VIA")  # set by `just bench-reference`: the command typed
    shown = f"`{via}` (which runs `{command}`)" if via else f"`{command}`"
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": __import__("transformers").__version__ if have_transformers() else None,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu": cpu_model(),
        "device": a.device if a.device == "cpu" else f"{a.device} ({torch.cuda.get_device_name(0)})",
        "cores": os.cpu_count(),
        "command": command,
        "via": via,
        "quick": a.quick,
    }
    say = lambda s: print(s, file=sys.stderr, flush=True)  # progress on stderr, the table on stdout
    say(f"reference: torch {meta['torch']}, torchvision {meta['torchvision']}, {meta['threads']} threads "
        f"(interop {meta['interop_threads']}), {meta['cpu']}")

    results = {}
    t_all = time.perf_counter()
    if not a.skip_forward:
        if not have_transformers():
            skipped = [m for m in models if m in TRANSFORMERS]
            if skipped:
                say(f"  (no transformers installed: skipping {', '.join(skipped)})")
            models = [m for m in models if m not in TRANSFORMERS]
        for m in models:
            for f in formats:
                for b in batches:
                    if a.device == "cpu" and m in TRANSFORMERS and (f != "nchw" or b != max(batches)):
                        continue
                    for d in dtypes:
                        key = f"{m}/{f}/batch{b}" if a.device == "cpu" else f"{m}/{f}/{d}/batch{b}"
                        results[key] = r = bench_forward(m, f, b, a.reps, a.warmup, a.min_images, a.device, d)
                        say(f"  {key}: {r['median']:.1f} images/s (min {r['min']:.1f}, max {r['max']:.1f})")
    if not a.skip_e2e:
        for f in formats:
            for w in workers:
                key = f"e2e/resnet18/{f}/workers{w}"
                results[key] = r = bench_e2e(a.data, f, w, a.e2e_batch, a.reps, a.e2e_limit)
                say(f"  {key}: {r['images']} images, {r['median']:.1f} images/s "
                    f"(min {r['min']:.1f}, max {r['max']:.1f})")
    meta["seconds"] = round(time.perf_counter() - t_all, 1)

    header = (
        "# PyTorch reference benchmarks\n\n"
        f"Measured {meta['date']} by {shown}{' (--quick: smoke-test sizes, not real figures)' if a.quick else ''}:\n"
        f"torch {meta['torch']}, torchvision {meta['torchvision']}, Python {meta['python']}, "
        f"{meta['threads']} intra-op threads + {meta['interop_threads']} inter-op, "
        f"CPU {meta['cpu']} ({meta['cores']} logical cores), device {meta['device']}, {a.dtypes}, "
        f"{a.reps} timed repetition{'s' if a.reps != 1 else ''} "
        f"(median, min, max), {meta['seconds']} s in all.\n"
        "Random weights (speed does not depend on their values); BN not folded (eval-mode modules as "
        "a PyTorch user runs them). EfficientNet-Lite0 is defined in bench/reference.py "
        "(symmetric padding instead of TF SAME). Compare with [benchmarks.md](benchmarks.md)."
    )
    table = markdown(results, header)
    print(table, end="")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(table)
        say(f"wrote {a.out}")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({"meta": meta, **results}, indent=2) + "\n")
        say(f"wrote {a.json}")


if __name__ == "__main__":
    main()
