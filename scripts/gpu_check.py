#!/usr/bin/env python3
"""headstart's GPU check: the CUDA build against the CPU build and against PyTorch, on one GPU.

Run by scripts/gpu-check.sh (which finds the CUDA libraries and the binary); see docs/gpu.md.

    python3 scripts/gpu_check.py --bin BIN --pack DIR --out DIR [--cpu-only] [--quick]

BIN is the CUDA build of headstart, DIR the pack made by scripts/gpu-pack.sh (sample photos,
EfficientNet-Lite0 weights, the DINOv2/CLIP fixture configs). Writes DIR_OUT/gpu-check.json and
DIR_OUT/gpu-check.md after every step, so a run cut short still reports what it did.

Checks (f32 must be within 1e-4 relative L2 of the reference, per model):
  1. `headstart devices --json`, nvidia-smi, the PyTorch that is there.
  2. Features of ResNet-18 (random weights made here, seeded, non-trivial batch-norm), Lite0 (real
     weights), DINOv2 and CLIP (the shared fixture configs) on the same inputs (16 photos through
     torchvision's transforms + 8 N(0,1) images): headstart on cuda vs headstart on the CPU, vs
     PyTorch/transformers on this GPU (TF32 off) and on its CPU; headstart's f16/bf16 against its
     f32 beside PyTorch's; headstart's CUDA kernels against candle's own operations.
  3. `extract` of the sample on cuda and on the CPU: images/s, peak GPU memory, every cached row
     of the CUDA cache within 1e-4 of the CPU cache's; bf16 extraction too.
  4. `train-head` on the CUDA cache, `predict` and `eval --device cuda`; the bf16 cache's head
     scored the same way (what bf16 costs in accuracy).
  5. Forward throughput at batch 64 and 256 in f32 and bf16 (`headstart benchmark`) beside
     PyTorch's (`bench/reference.py --device cuda`), same models, same GPU.
With --cpu-only (no GPU: to try the script) every CUDA step is skipped and the rest runs.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4
REPORT = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "steps": {}, "checks": []}
ARGS = None


def log(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)


def write_report():
    out = Path(ARGS.out)
    (out / "gpu-check.json").write_text(json.dumps(REPORT, indent=1, default=str))
    (out / "gpu-check.md").write_text(markdown(REPORT))


def check(name, value, limit, detail=""):
    ok = value is not None and value <= limit
    REPORT["checks"].append({"check": name, "value": value, "limit": limit, "ok": ok, "detail": detail})
    log(f"{'PASS' if ok else 'FAIL'}  {name}: {value if value is None else f'{value:.3g}'} (≤ {limit:g}) {detail}")
    return ok


def step(name):
    """Runs a step, recording its time and any exception; later steps still run."""

    def wrap(f):
        def run(*a, **k):
            t0 = time.time()
            log(f"== {name}")
            rec = {"ok": False}
            REPORT["steps"][name] = rec
            try:
                rec["result"] = f(*a, **k)
                rec["ok"] = True
            except Exception as e:  # noqa: BLE001 - one failing step must not stop the others
                rec["error"] = f"{type(e).__name__}: {e}"
                rec["traceback"] = traceback.format_exc()[-3000:]
                log(f"step {name} failed: {rec['error']}")
            rec["seconds"] = round(time.time() - t0, 1)
            write_report()
            return rec.get("result")

        return run

    return wrap


def sh(cmd, env=None, timeout=300, check_rc=True):
    """Runs a command; returns stdout. Logs the command, its time and stderr's tail."""
    t0 = time.time()
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=full_env, timeout=timeout)
    dt = time.time() - t0
    shown = " ".join(str(c) for c in cmd)
    log(f"$ {shown}  ({dt:.1f} s, exit {p.returncode})")
    if p.stderr.strip():
        tail = "\n".join(p.stderr.strip().splitlines()[-6:])
        log("  stderr: " + tail.replace("\n", "\n          "))
    if check_rc and p.returncode != 0:
        raise RuntimeError(f"{shown} exited {p.returncode}: {p.stderr.strip()[-800:]}")
    return p.stdout


def hs(*args, env=None, timeout=300, check_rc=True):
    return sh([ARGS.bin, *args], env=env, timeout=timeout, check_rc=check_rc)


# ------------------------------------------------------------------------------------------------
# PyTorch side


def torch_setup():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return torch


def randomize_bn(model, torch):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g) * 0.1
            m.running_mean.data = torch.randn(c, generator=g) * 0.1
            m.running_var.data = torch.rand(c, generator=g) + 0.5


class Lite0:
    """EfficientNet-Lite0 in functional PyTorch from efficientnet_pytorch-named weights, with
    TensorFlow "SAME" padding (the extra row/column at the bottom/right)."""

    STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]

    def __init__(self, sd, torch):
        self.t = torch
        self.sd = {k: v.float() for k, v in sd.items() if v.is_floating_point()}

    def to(self, device, dtype=None):
        self.sd = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in self.sd.items()}
        return self

    def conv_bn(self, x, conv, bn, stride, groups, act):
        F = self.t.nn.functional
        w = self.sd[conv + ".weight"]
        k = w.shape[-1]
        h, wd = x.shape[-2:]

        def same(n):
            out = -(-n // stride)
            total = max((out - 1) * stride + k - n, 0)
            return total // 2, total - total // 2

        (t, b), (l, r) = same(h), same(wd)
        x = F.pad(x, (l, r, t, b))
        x = F.conv2d(x, w, stride=stride, groups=groups)
        x = F.batch_norm(x, self.sd[bn + ".running_mean"], self.sd[bn + ".running_var"],
                         self.sd[bn + ".weight"], self.sd[bn + ".bias"], False, 0.0, 1e-3)
        return self.t.clamp(x, 0, 6) if act else x

    def __call__(self, x):
        x = self.conv_bn(x, "_conv_stem", "_bn0", 2, 1, True)
        i = 0
        for reps, k, s, e, cin0, cout in self.STAGES:
            for r in range(reps):
                cin, st = (cin0, s) if r == 0 else (cout, 1)
                p = f"_blocks.{i}"
                i += 1
                y = x
                if e != 1:
                    y = self.conv_bn(y, p + "._expand_conv", p + "._bn0", 1, 1, True)
                y = self.conv_bn(y, p + "._depthwise_conv", p + "._bn1", st, cin * e, True)
                y = self.conv_bn(y, p + "._project_conv", p + "._bn2", 1, 1, False)
                x = x + y if (st == 1 and cin == cout) else y
        x = self.conv_bn(x, "_conv_head", "_bn1", 1, 1, True)
        return x.mean((2, 3))


def load_lite0_state(path, torch):
    sd = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    return sd


def torch_models(work, pack, torch):
    """name → (callable model factory on a device/dtype, preprocessing, headstart --backbone,
    weights path for headstart)."""
    import torchvision
    from safetensors.torch import save_file

    models = {}
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(weights=None)
    randomize_bn(r18, torch)
    r18.fc = torch.nn.Identity()
    r18.eval()
    sd = {k: v.contiguous() for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    # headstart reads torchvision names; fc is not needed for features.
    save_file(sd, str(work / "resnet18.safetensors"))
    models["resnet18"] = dict(backbone="resnet18", weights=work / "resnet18.safetensors",
                              build=lambda: r18, preprocess=("bilinear", 256, 224, "imagenet"))
    lite0_pth = pack / "weights" / "efficientnet-lite0-57934424.pth"
    sd = load_lite0_state(lite0_pth, torch)
    models["efficientnet-lite0"] = dict(backbone="efficientnet-lite0", weights=lite0_pth,
                                        build=lambda: Lite0(sd, torch), preprocess=("bicubic", 256, 224, "half"))
    try:
        import transformers

        d = pack / "fixtures" / "dinov2"
        dino = transformers.Dinov2Model.from_pretrained(str(d)).eval()

        class DinoFeatures(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                h = self.m(pixel_values=x).last_hidden_state
                return torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=1)

        models["dinov2"] = dict(backbone="dinov2-small", weights=d / "model.safetensors",
                                build=lambda: DinoFeatures(dino).eval(), preprocess=("bicubic", 256, 224, "imagenet"))
        c = pack / "fixtures" / "clip"
        clip = transformers.CLIPVisionModelWithProjection.from_pretrained(str(c)).eval()

        class ClipFeatures(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(pixel_values=x).image_embeds

        models["clip"] = dict(backbone="clip-vit-b32", weights=c / "model.safetensors",
                              build=lambda: ClipFeatures(clip).eval(), preprocess=("bicubic", 224, 224, "clip"))
    except Exception as e:  # noqa: BLE001
        log(f"transformers models unavailable: {e}")
        REPORT["transformers_error"] = str(e)
    return models


MEANS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
}


def make_input(spec, photos, torch):
    from PIL import Image
    from torchvision import transforms

    interp, resize, crop, norm = spec
    mode = transforms.InterpolationMode.BICUBIC if interp == "bicubic" else transforms.InterpolationMode.BILINEAR
    mean, std = MEANS[norm]
    tf = transforms.Compose([transforms.Resize(resize, interpolation=mode), transforms.CenterCrop(crop),
                             transforms.ToTensor(), transforms.Normalize(mean, std)])
    xs = [tf(Image.open(p).convert("RGB")) for p in photos]
    g = torch.Generator().manual_seed(7)
    noise = torch.randn(8, 3, crop, crop, generator=g)
    return torch.cat([torch.stack(xs), noise]).contiguous()


def rel(a, b):
    """‖a − b‖ / ‖b‖ over the whole tensor, and the largest per-row ratio."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    whole = float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
    rows = np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-30)
    return whole, float(rows.max())


# ------------------------------------------------------------------------------------------------
# Steps


@step("environment")
def environment():
    out = {}
    out["devices"] = json.loads(hs("devices", "--json"))
    log(hs("devices").strip())
    if shutil.which("nvidia-smi"):
        out["nvidia_smi"] = sh(["nvidia-smi"], check_rc=False)
        out["nvidia_smi_query"] = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                      "--format=csv,noheader"], check_rc=False).strip()
    try:
        torch = torch_setup()
        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        out["torch_gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        import torchvision

        out["torchvision"] = torchvision.__version__
        try:
            import transformers

            out["transformers"] = transformers.__version__
        except ImportError:
            pass
    except ImportError as e:
        out["torch_error"] = str(e)
    out["ld_library_path"] = os.environ.get("LD_LIBRARY_PATH")
    if not ARGS.cpu_only:
        dev = out["devices"]
        ok = dev["build"]["cuda"] and dev["auto"].startswith("cuda")
        check("headstart devices: cuda compiled in and a GPU usable", 0.0 if ok else 1.0, 0.0,
              dev["cuda"].get("message", ""))
    return out


@step("features")
def features(work, pack, photos):
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    torch = torch_setup()
    cuda = torch.cuda.is_available() and not ARGS.cpu_only
    models = torch_models(work, pack, torch)
    results = {}
    for name, m in models.items():
        r = results[name] = {}
        x = make_input(m["preprocess"], photos, torch)
        inp = work / f"{name}-input.safetensors"
        save_file({"input": x}, str(inp))
        # PyTorch references.
        model = m["build"]()
        refs = {}
        with torch.inference_mode():
            refs["torch_cpu"] = model(x).float().numpy()
            if cuda:
                mc = model.to("cuda") if hasattr(model, "to") else model
                if isinstance(model, Lite0):
                    mc = Lite0(load_lite0_state(m["weights"], torch), torch).to("cuda")
                refs["torch_cuda"] = mc(x.cuda()).float().cpu().numpy()
                for dt, tdt in (("bf16", torch.bfloat16), ("f16", torch.float16)):
                    try:
                        if isinstance(model, Lite0):
                            md = Lite0(load_lite0_state(m["weights"], torch), torch).to("cuda", tdt)
                        else:
                            md = m["build"]().to("cuda", tdt)
                        refs[f"torch_cuda_{dt}"] = md(x.cuda().to(tdt)).float().cpu().numpy()
                    except Exception as e:  # noqa: BLE001
                        r[f"torch_{dt}_error"] = str(e)
                # The f32 model again (the reduced-precision copies may share storage).
                model = m["build"]()
        # headstart runs.
        runs = {"cpu": (["--device", "cpu"], {})}
        if cuda:
            runs["cuda"] = (["--device", "cuda"], {})
            runs["cuda_bf16"] = (["--device", "cuda", "--dtype", "bf16"], {})
            runs["cuda_f16"] = (["--device", "cuda", "--dtype", "f16"], {})
            if name in ("resnet18", "efficientnet-lite0"):
                runs["cuda_candle_ops"] = (["--device", "cuda"], {"HEADSTART_CUDA_KERNELS": "0"})
        ours = {}
        for run, (flags, env) in runs.items():
            outp = work / f"{name}-{run}.safetensors"
            try:
                hs("forward", "--backbone", m["backbone"], "--weights", m["weights"], "--input", inp,
                   "--out", outp, *flags, env=env)
                ours[run] = load_file(str(outp))["input.features"]
            except Exception as e:  # noqa: BLE001
                r[f"{run}_error"] = str(e)
        r["rows"] = int(x.shape[0])
        r["dim"] = int(refs["torch_cpu"].shape[1])

        def cmp(label, a, b, limit=None):
            if a in ours and (b in ours or b in refs):
                whole, worst = rel(ours[a], ours.get(b, refs.get(b)))
                r[label] = {"rel_l2": whole, "worst_row": worst}
                if limit is not None:
                    check(f"{name}: {label}", whole, limit, f"(worst row {worst:.2e})")

        cmp("cpu_vs_torch_cpu", "cpu", "torch_cpu", TOL)
        cmp("cuda_vs_cpu", "cuda", "cpu", TOL)
        cmp("cuda_vs_torch_cuda", "cuda", "torch_cuda", TOL)
        cmp("cuda_candle_ops_vs_cuda", "cuda_candle_ops", "cuda", TOL)
        for dt in ("bf16", "f16"):
            cmp(f"cuda_{dt}_vs_cuda_f32", f"cuda_{dt}", "cuda")
            if f"torch_cuda_{dt}" in refs and "torch_cuda" in refs:
                whole, worst = rel(refs[f"torch_cuda_{dt}"], refs["torch_cuda"])
                r[f"torch_{dt}_vs_torch_f32"] = {"rel_l2": whole, "worst_row": worst}
        if "torch_cuda" in refs:
            whole, worst = rel(refs["torch_cuda"], refs["torch_cpu"])
            r["torch_cuda_vs_torch_cpu"] = {"rel_l2": whole, "worst_row": worst}
        for k, v in r.items():
            if isinstance(v, dict):
                log(f"  {name} {k}: {v['rel_l2']:.2e} (worst row {v['worst_row']:.2e})")
        np.save(work / f"{name}-done.npy", np.zeros(1))
    return results


def read_cache(cache):
    """(path, view) → feature row, from a headstart cache's manifest and shards."""
    import numpy as np
    from safetensors.numpy import load_file

    manifest = json.loads((cache / "manifest.json").read_text())
    rows = {}
    for shard in manifest["shards"]:
        t = load_file(str(cache / shard["file"]))
        feats = t["features"].astype(np.float32)
        for i in range(feats.shape[0]):
            key = (manifest["images"][int(t["image"][i])]["path"], int(t["view"][i]))
            rows[key] = feats[i]
    return manifest, rows


@step("extract")
def extract(work, pack, data):
    lite0 = pack / "weights" / "efficientnet-lite0-57934424.pth"
    common = ["--backbone", "efficientnet-lite0", "--weights", lite0, "--views", "2", "--seed", "43", "--json"]
    out = {}
    caches = {"cpu": (["--device", "cpu"], work / "cache-cpu")}
    if not ARGS.cpu_only:
        caches["cuda"] = (["--device", "cuda"], work / "cache-cuda")
        caches["cuda_bf16"] = (["--device", "cuda", "--dtype", "bf16"], work / "cache-cuda-bf16")
    for name, (flags, cache) in caches.items():
        rep = json.loads(hs("extract", data, "--cache", cache, *flags, *common, timeout=600))
        out[name] = {k: rep.get(k) for k in ("images_ok", "images_skipped", "rows", "shards", "seconds",
                                              "images_per_second", "gpu_peak_memory_bytes", "device")}
        log(f"  extract {name}: {rep.get('images_ok')} images, {rep.get('images_per_second'):.1f} images/s, "
            f"peak GPU memory {rep.get('gpu_peak_memory_bytes')}")
    if "cuda" in caches:
        import numpy as np

        m_cpu, r_cpu = read_cache(work / "cache-cpu")
        m_gpu, r_gpu = read_cache(work / "cache-cuda")
        paths_cpu = [e["path"] for e in m_cpu["images"]]
        paths_gpu = [e["path"] for e in m_gpu["images"]]
        same_images = paths_cpu == paths_gpu and set(r_cpu) == set(r_gpu)
        check("extract: CUDA and CPU caches hold the same images and views", 0.0 if same_images else 1.0, 0.0)
        worst = 0.0
        for k, v in r_cpu.items():
            if k in r_gpu:
                d = float(np.linalg.norm(r_gpu[k] - v) / max(np.linalg.norm(v), 1e-30))
                worst = max(worst, d)
        out["rows_compared"] = len(r_cpu)
        out["worst_row_rel_err"] = worst
        check("extract: every CUDA cache row vs the CPU cache's", worst, TOL, f"({len(r_cpu)} rows)")
        _, r_bf = read_cache(work / "cache-cuda-bf16")
        errs = [float(np.linalg.norm(r_bf[k] - v) / max(np.linalg.norm(v), 1e-30)) for k, v in r_gpu.items() if k in r_bf]
        out["bf16_rows_rel_err"] = {"median": float(np.median(errs)), "max": float(np.max(errs))}
    return out


@step("train-predict-eval")
def train_predict_eval(work, data, photos):
    out = {}
    caches = ["cpu"] if ARGS.cpu_only else ["cpu", "cuda", "cuda-bf16"]
    for c in caches:
        cache = work / f"cache-{c}"
        head = work / f"head-{c}"
        rep = json.loads(hs("train-head", "--cache", cache, "--out", head, "--seed", "1", "--json"))
        out[f"train_{c}"] = {k: rep.get(k) for k in ("val_accuracy", "macro_f1", "seconds")}
        dev = "cpu" if c == "cpu" else "cuda"
        dtype = ["--dtype", "bf16"] if c.endswith("bf16") else []
        ev = json.loads(hs("eval", "--head", head, "--weights", ARGS.lite0, "--device", dev, *dtype, data, "--json"))
        out[f"eval_{c}"] = {k: ev.get(k) for k in ("accuracy", "macro_f1", "n")}
        pred = json.loads(hs("predict", "--head", head, "--weights", ARGS.lite0, "--device", dev, *dtype,
                             "--format", "json", *photos[:16]))
        out[f"predict_{c}"] = [{"path": Path(p["path"]).name, "top": p.get("top", [{}])[0].get("label")} for p in pred]
        log(f"  {c}: train-head val accuracy {out[f'train_{c}']['val_accuracy']}, eval accuracy {ev.get('accuracy')}")
    if "eval_cuda" in out:
        same = [a["top"] == b["top"] for a, b in zip(out["predict_cpu"], out["predict_cuda"])]
        check("predict: the CUDA head's top-1 equals the CPU head's on 16 photos",
              float(len(same) - sum(same)), 0.0)
    return out


@step("throughput")
def throughput(work, pack):
    """headstart benchmark vs bench/reference.py --device cuda, batch 64/256, f32/bf16."""
    import torch

    torch = torch_setup()
    out = {"headstart": {}, "pytorch": None}
    if ARGS.cpu_only:
        return out
    # Hub-size random weights for the transformers (the real ones are not reachable here).
    import transformers

    sized = {}
    d = work / "dinov2-small-hub"
    cfg = transformers.Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                    intermediate_size=1536, patch_size=14, image_size=518, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    transformers.Dinov2Model(cfg).save_pretrained(str(d))
    sized["dinov2-small"] = d / "model.safetensors"
    c = work / "clip-vit-b32-hub"
    vcfg = transformers.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, patch_size=32, image_size=224,
                                         hidden_act="quick_gelu", projection_dim=512)
    transformers.CLIPVisionModelWithProjection(vcfg).save_pretrained(str(c))
    sized["clip-vit-b32"] = c / "model.safetensors"
    weights = {"resnet18": work / "resnet18.safetensors",
               "efficientnet-lite0": pack / "weights" / "efficientnet-lite0-57934424.pth", **sized}
    batches = "64,256"
    reps = "3" if ARGS.quick else "5"
    for model, w in weights.items():
        for dt in ("f32", "bf16"):
            try:
                rep = json.loads(hs("benchmark", "--backbone", model, "--weights", w, "--device", "cuda",
                                    "--dtype", dt, "--batch-sizes", batches, "--reps", reps,
                                    "--min-images", "512", "--json", timeout=240))
                out["headstart"][f"{model}/{dt}"] = rep["results"]
                log("  headstart " + f"{model} {dt}: " + ", ".join(
                    f"batch {r['batch']} {r['median']:.0f}/s" for r in rep["results"]))
            except Exception as e:  # noqa: BLE001
                out["headstart"][f"{model}/{dt}"] = {"error": str(e)}
    ref_json = work / "reference-cuda.json"
    try:
        sh([sys.executable, ROOT / "bench" / "reference.py", "--device", "cuda", "--batches", batches,
            "--dtypes", "f32,bf16", "--formats", "nchw,channels_last", "--reps", reps, "--min-images", "512",
            "--skip-e2e", "--json", ref_json, "--out", work / "reference-cuda.md"], timeout=400)
        out["pytorch"] = json.loads(ref_json.read_text())
    except Exception as e:  # noqa: BLE001
        out["pytorch"] = {"error": str(e)}
    return out


# ------------------------------------------------------------------------------------------------


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}e}" if abs(v) < 1e-2 else f"{v:.{digits + 1}g}"
    return str(v)


def markdown(rep):
    lines = ["# GPU check", "", f"Started {rep['started']}."]
    env = rep["steps"].get("environment", {}).get("result") or {}
    if env:
        dev = env.get("devices", {})
        gpus = dev.get("cuda", {}).get("gpus", [])
        lines += ["", f"- GPU: {', '.join(g['name'] for g in gpus) or 'none'}; driver CUDA "
                  f"{dev.get('cuda', {}).get('driver_cuda_version', '—')}; `nvidia-smi`: {env.get('nvidia_smi_query', '—')}",
                  f"- headstart build: {json.dumps(dev.get('build', {}))}",
                  f"- PyTorch {env.get('torch')} (CUDA {env.get('torch_cuda')}), torchvision {env.get('torchvision')}, "
                  f"transformers {env.get('transformers', '—')}"]
    checks = rep["checks"]
    passed = sum(c["ok"] for c in checks)
    lines += ["", f"## Checks: {passed} of {len(checks)} pass", "", "| check | value | limit | |", "| --- | ---: | ---: | --- |"]
    for c in checks:
        lines.append(f"| {c['check']} {c.get('detail', '')} | {fmt(c['value'])} | {c['limit']:g} | {'ok' if c['ok'] else '**FAIL**'} |")
    feats = rep["steps"].get("features", {}).get("result") or {}
    if feats:
        cols = ["cpu_vs_torch_cpu", "cuda_vs_cpu", "cuda_vs_torch_cuda", "cuda_candle_ops_vs_cuda",
                "cuda_bf16_vs_cuda_f32", "torch_bf16_vs_torch_f32", "cuda_f16_vs_cuda_f32", "torch_f16_vs_torch_f32"]
        lines += ["", "## Features: ‖a − b‖ / ‖b‖ over all rows (16 photos + 8 N(0,1) inputs)", "",
                  "| model | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
        for name, r in feats.items():
            lines.append(f"| {name} | " + " | ".join(fmt((r.get(c) or {}).get("rel_l2")) for c in cols) + " |")
    ex = rep["steps"].get("extract", {}).get("result") or {}
    if ex:
        lines += ["", "## extract (EfficientNet-Lite0, sample photos, 2 augmented views)", "",
                  "| run | images | rows | seconds | images/s | peak GPU memory |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for k in ("cpu", "cuda", "cuda_bf16"):
            if k in ex:
                e = ex[k]
                mem = e.get("gpu_peak_memory_bytes")
                lines.append(f"| {k} | {e.get('images_ok')} | {e.get('rows')} | {fmt(e.get('seconds'))} | "
                             f"{fmt(e.get('images_per_second'))} | {'—' if mem is None else f'{mem / 2**20:.0f} MiB'} |")
        if "worst_row_rel_err" in ex:
            lines.append(f"\nWorst CUDA-vs-CPU row over {ex['rows_compared']} rows: {fmt(ex['worst_row_rel_err'])}; "
                         f"bf16 rows vs f32: median {fmt(ex['bf16_rows_rel_err']['median'])}, max {fmt(ex['bf16_rows_rel_err']['max'])}.")
    tpe = rep["steps"].get("train-predict-eval", {}).get("result") or {}
    if tpe:
        lines += ["", "## train-head / eval", "", "| cache | train-head val accuracy | eval accuracy (whole sample) |",
                  "| --- | ---: | ---: |"]
        for c in ("cpu", "cuda", "cuda-bf16"):
            if f"train_{c}" in tpe:
                lines.append(f"| {c} | {fmt(tpe[f'train_{c}'].get('val_accuracy'))} | {fmt(tpe[f'eval_{c}'].get('accuracy'))} |")
    tp = rep["steps"].get("throughput", {}).get("result") or {}
    if tp.get("headstart"):
        ref = tp.get("pytorch") or {}
        lines += ["", "## Forward throughput on the GPU, images/s (median; host→device copy and features back included)", "",
                  "| model | dtype | batch | headstart | PyTorch NCHW | PyTorch channels_last | headstart peak memory |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for key, rows in tp["headstart"].items():
            model, dt = key.split("/")
            if isinstance(rows, dict):
                lines.append(f"| {model} | {dt} | — | error: {rows.get('error', '')[:80]} | | | |")
                continue
            for r in rows:
                def refv(f):
                    v = ref.get(f"{model}/{f}/{dt}/batch{r['batch']}") if isinstance(ref, dict) else None
                    return fmt(v["median"]) if isinstance(v, dict) and "median" in v else "—"
                mem = r.get("peak_memory_bytes")
                lines.append(f"| {model} | {dt} | {r['batch']} | **{r['median']:.0f}** | {refv('nchw')} | {refv('channels_last')} | "
                             f"{'—' if mem is None else f'{mem / 2**30:.2f} GiB'} |")
    failed = [k for k, v in rep["steps"].items() if not v.get("ok")]
    if failed:
        lines += ["", "## Steps that failed", ""]
        for k in failed:
            lines.append(f"- {k}: {rep['steps'][k].get('error', 'not finished')}")
    return "\n".join(lines) + "\n"


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--pack", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-only", action="store_true", help="no GPU: skip every CUDA step")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--only", default="", help="comma-separated steps to run (default all)")
    ARGS = p.parse_args()
    out = Path(ARGS.out)
    out.mkdir(parents=True, exist_ok=True)
    pack = Path(ARGS.pack).resolve()
    ARGS.lite0 = pack / "weights" / "efficientnet-lite0-57934424.pth"
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/headstart-gpu-check"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = pack / "photos"
    photos = sorted(str(p) for p in data.rglob("*.jpg"))[::13][:16]
    only = set(filter(None, ARGS.only.split(",")))
    t0 = time.time()
    if not only or "environment" in only:
        environment()
    if not only or "features" in only:
        features(work, pack, photos)
    if not only or "extract" in only:
        extract(work, pack, data)
    if not only or "train-predict-eval" in only:
        train_predict_eval(work, data, photos)
    if not only or "throughput" in only:
        throughput(work, pack)
    REPORT["seconds"] = round(time.time() - t0, 1)
    write_report()
    failed = [c["check"] for c in REPORT["checks"] if not c["ok"]]
    broken = [k for k, v in REPORT["steps"].items() if not v.get("ok")]
    log(f"done in {REPORT['seconds']} s: {len(REPORT['checks']) - len(failed)} of {len(REPORT['checks'])} checks pass"
        + (f"; failed: {failed}" if failed else "") + (f"; steps with errors: {broken}" if broken else ""))
    sys.exit(1 if failed or broken else 0)


if __name__ == "__main__":
    main()
