"""How similar are copies of a photo, and how similar are distinct photos? (docs/audit.md)

Makes edited copies of the first N photos of every class (re-encoded, resized, cropped, a
thumbnail, lossless PNG, mirrored), extracts the originals and the copies into one feature cache
with headstart, and prints, per kind of copy, the cosine similarity of its eval-view features to
its original's — against the similarity of every original photo to its nearest *other* original.
The near-duplicate threshold must sit above the distinct pairs and below the copies.

    python bench/dup_threshold.py HEADSTART DATA_DIR WEIGHTS WORK_DIR [--per-class 20]
        [--backbone efficientnet-lite0]

Needs numpy, safetensors and Pillow.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from safetensors.numpy import load_file

EDITS = {
    "jpeg-q85": lambda im: (im, 85),
    "jpeg-q75": lambda im: (im, 75),
    "jpeg-q50": lambda im: (im, 50),
    "resize-75%": lambda im: (im.resize(fit(im, round(max(im.size) * 0.75)), Image.BICUBIC), 85),
    "resize-50%": lambda im: (im.resize((im.width // 2, im.height // 2), Image.BICUBIC), 85),
    "thumbnail-128": lambda im: (im.copy().resize(fit(im, 128), Image.BICUBIC), 85),
    "crop-90%": lambda im: (center_crop(im, 0.9), 90),
    "crop-75%": lambda im: (center_crop(im, 0.75), 90),
    "png": lambda im: (im, None),
    "mirror": lambda im: (ImageOps.mirror(im), 90),
}


def fit(im, side):
    s = side / max(im.width, im.height)
    return max(1, round(im.width * s)), max(1, round(im.height * s))


def center_crop(im, f):
    w, h = round(im.width * f), round(im.height * f)
    x, y = (im.width - w) // 2, (im.height - h) // 2
    return im.crop((x, y, x + w, y + h))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("headstart")
    ap.add_argument("data", type=Path)
    ap.add_argument("weights")
    ap.add_argument("work", type=Path)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    a = ap.parse_args()
    ds = a.work / "data"
    classes = sorted(p.name for p in a.data.iterdir() if p.is_dir())
    copies = []  # (copy path, original path, kind)
    for c in classes:
        (ds / c).mkdir(parents=True, exist_ok=True)
        photos = sorted(p for p in (a.data / c).iterdir() if p.is_file())
        for p in photos:
            link = ds / c / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
        for p in photos[: a.per_class]:
            im = Image.open(p).convert("RGB")
            for kind, edit in EDITS.items():
                out, q = edit(im)
                name = f"copy--{kind}--{p.stem}" + (".png" if q is None else ".jpg")
                dst = ds / c / name
                if not dst.exists():
                    if q is None:
                        out.save(dst)
                    else:
                        out.save(dst, quality=q)
                copies.append((f"{c}/{name}", f"{c}/{p.name}", kind))
    cache = a.work / "cache"
    subprocess.run(
        [a.headstart, "extract", str(ds), "--cache", str(cache), "--backbone", a.backbone,
         "--weights", a.weights, "--views", "0", "--quiet"],
        check=True,
    )
    manifest = json.loads((cache / "manifest.json").read_text())
    shards = [load_file(cache / s["file"]) for s in manifest["shards"]]
    X = np.concatenate([s["features"] for s in shards]).astype(np.float64)
    image = np.concatenate([s["image"] for s in shards])
    view = np.concatenate([s["view"] for s in shards])
    keep = view == 0
    X, image = X[keep], image[keep]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    path = [manifest["images"][i]["path"] for i in image]
    row = {p: r for r, p in enumerate(path)}
    originals = [r for r, p in enumerate(path) if "/copy--" not in p]
    O = X[originals]
    S = O @ O.T
    np.fill_diagonal(S, -1)
    nearest = S.max(axis=1)
    print(f"{len(originals)} original photos, {len(copies)} copies, backbone {a.backbone}")
    print()
    print("| pair | n | min | 1st pct | median |")
    print("|---|---:|---:|---:|---:|")
    for kind in EDITS:
        sims = np.array([X[row[c]] @ X[row[o]] for c, o, k in copies if k == kind])
        print(f"| copy: {kind} | {len(sims)} | {sims.min():.4f} | {np.percentile(sims, 1):.4f} | {np.median(sims):.4f} |")
    print(f"| original → nearest other original | {len(nearest)} | {nearest.min():.4f} | "
          f"{np.percentile(nearest, 1):.4f} | {np.median(nearest):.4f} |")
    print()
    q = np.percentile(nearest, [90, 99, 99.5])
    print(f"nearest other original: 90th pct {q[0]:.4f}, 99th {q[1]:.4f}, 99.5th {q[2]:.4f}, max {nearest.max():.4f}")
    print("closest pairs of distinct originals:")
    iu = np.triu_indices(len(originals), 1)
    flat = S[iu]
    for k in np.argsort(-flat)[:12]:
        i, j = iu[0][k], iu[1][k]
        same = manifest["images"][image[originals[i]]]["sha256"] == manifest["images"][image[originals[j]]]["sha256"]
        print(f"  {flat[k]:.4f}  {path[originals[i]]}  {path[originals[j]]}{'  (same bytes)' if same else ''}")


if __name__ == "__main__":
    sys.exit(main())
