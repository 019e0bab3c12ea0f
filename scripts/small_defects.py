"""Small defects: which frozen EfficientNet-Lite0 features make the magnetic-tile classes learnable
(issue 17 item 7; results and commands in docs/small-defects.md).

Validation never reads ``test/`` and never splits a physical defect: the training images are grouped
into *defect groups* exactly as the set's README describes (same class, file numbers ``n`` within 1,000
of a neighbour — 3,000 here, see LINK_GAP —, or 24×24 equalised thumbnails correlated ≥ 0.95), and the 4 folds hold out *whole
groups* (per class, the largest groups first, each to the fold with the fewest images of that class;
crack and fray have 4 groups each, so every fold holds one of them out). Every head's hyper-parameter
is chosen on those folds; the variant's test accuracy is then measured once, trained on all of train/.

Feature variants (one frozen backbone pass each, cached in ``--cache`` as .npz):

    crop<S>    the product's decode today: shorter side → S, centre crop S×S
    fit<S>     the whole image squashed to S×S (nothing cut off; aspect changes)
    aspect<S>  the whole image, shorter side → S, aspect kept (run one at a time: convolutional)
    tiles<S>   fit<S>, cut into overlapping 224-px tiles (stride 112, the last tile flush with the
               border: 3 × 3 at 448), each tile through the backbone on its own (core/sg/tiles.py)
    suffixes: -eq (histogram-equalised grayscale), -std (per-image standardised grayscale)

Pools of each pass: ``mean`` (the product's global feature), ``max``, ``gem`` (generalised mean, p=3),
``top`` (mean of the top 5 % positions per channel) over the 1280-channel map; ``m4max`` / ``m5max``
(max over the stride-16 112-ch / stride-32 192-ch block outputs, PatchCore's mid-level features;
``a+b`` concatenates both, each L2-normalised);
tiles: ``tmean`` / ``tmax`` / ``tgem`` over per-tile mean vectors. ``anomaly`` (fit passes): PatchCore-
style — each position's distance to the nearest position of a defect-free training image (the bank is
rebuilt inside every fold from that fold's training part), the features of the 10 % most anomalous
positions averaged, plus the largest anomaly.

Heads (closed form): NCM (cosine to class means), FeCAM-style (class means + one shared covariance
with shrinkage a, Mahalanobis), ridge (one-hot targets, λ); inputs L2-normalised and centred on the
training mean.

    nice -n 5 /work/main/.venv/bin/python scripts/small_defects.py [--passes crop224 fit448 ...]
        [--cache /tmp/sgcl-defects-cache] [--threads 2] [--out docs/small-defects-table.md]
    ... scripts/small_defects.py --subset cifar10 --passes crop224 fit448 ...   (other subsets: see --help)
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

# numpy's BLAS threads on a loaded 2-core machine make the small head fits 10× slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "datasets"
NAME_RE = re.compile(r"exp(\d+)_num_(\d+)\.jpg$")
# The README links neighbours within 1,000 in the *source* pool; the subset keeps every k-th image of
# that pool, so a chain of shots of one defect can have gaps above 1,000 here (crack 86,892 → 88,149,
# 339,965 → 342,140). 3,000 re-links them: it may merge distinct defects, which only makes validation
# stricter, never leakier.
LINK_GAP = 3000
DEFAULT_PASSES = ["crop224", "crop448", "fit224", "fit320", "fit448", "fit512", "fit640", "aspect448",
                  "fit448-eq", "fit448-std", "tiles448"]
POOLS = ["mean", "max", "gem", "top", "m4max", "mean+max", "gem+m4max"]
TILE_POOLS = ["tmean", "tmax", "tgem", "tmean+tmax"]


# ---------------------------------------------------------------- data and defect groups
def list_split(root: Path, split: str, per_class: int | None = None):
    classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / split / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        files = files[:per_class] if per_class else files
        paths += files
        labels += [c] * len(files)
    return classes, paths, np.array(labels)


def _thumb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps
    image = ImageOps.equalize(Image.open(path).convert("L").resize((24, 24), Image.BILINEAR))
    v = np.asarray(image, np.float64).ravel()
    return (v - v.mean()) / (v.std() + 1e-9)


def defect_groups(paths, labels) -> np.ndarray:
    """The README's grouping, recomputed on the given images: a group id per image."""
    parent = list(range(len(paths)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i, j):
        parent[find(i)] = find(j)

    for c in np.unique(labels):
        idx = [i for i in np.flatnonzero(labels == c)]
        nums = {i: int(NAME_RE.search(paths[i].name).group(2)) if NAME_RE.search(paths[i].name) else i for i in idx}
        order = sorted(idx, key=lambda i: nums[i])
        for a, b in zip(order, order[1:]):
            if nums[b] - nums[a] <= LINK_GAP:
                union(a, b)
        thumbs = np.stack([_thumb(paths[i]) for i in idx])
        corr = thumbs @ thumbs.T / thumbs.shape[1]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                if corr[a, b] >= 0.95:
                    union(idx[a], idx[b])
    roots = [find(i) for i in range(len(paths))]
    remap = {r: g for g, r in enumerate(dict.fromkeys(roots))}
    return np.array([remap[r] for r in roots])


def group_folds(labels, groups, k: int = 4) -> np.ndarray:
    """Whole groups per fold, balanced per class (largest groups first, to the emptiest fold)."""
    folds = np.zeros(len(labels), int)
    for c in np.unique(labels):
        sizes = {}
        for g in groups[labels == c]:
            sizes[g] = sizes.get(g, 0) + 1
        fill = [0] * k
        for g in sorted(sizes, key=lambda g: (-sizes[g], g)):
            f = int(np.argmin(fill))
            folds[(groups == g) & (labels == c)] = f
            fill[f] += sizes[g]
    return folds


# ---------------------------------------------------------------- images and backbone passes
def parse_pass(name: str):
    m = re.fullmatch(r"(crop|fit|aspect|tiles)(\d+)(?:-(eq|std))?", name)
    if not m:
        raise SystemExit(f"unknown pass {name!r}")
    return m.group(1), int(m.group(2)), m.group(3) or "none"


def prepare(path: Path, mode: str, size: int, gray: str):
    """Float tensor (3, H, W), normalised as EfficientNet-Lite expects (mean = std = 0.5)."""
    import torch
    from PIL import Image, ImageOps

    image = Image.open(path).convert("L")
    if gray == "eq":
        image = ImageOps.equalize(image)
    w, h = image.size
    if mode == "crop":
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        image = image.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = image.crop((left, top, left + size, top + size))
    elif mode == "fit":
        image = image.resize((size, size), Image.BICUBIC)
    elif mode == "tiles":
        image = image.resize((size, size), Image.BICUBIC)
    else:  # aspect: shorter side -> size
        s = size / min(w, h)
        image = image.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    x = np.asarray(image, np.float32) / 255.0
    if gray == "std":
        x = (x - x.mean()) / (x.std() + 1e-6) * 0.25 + 0.5
    x = torch.from_numpy((x - 0.5) / 0.5)
    return x.expand(3, -1, -1).contiguous()


def backbone():
    from core.encoders.backbones import build_timm_effnet
    return build_timm_effnet("tf_efficientnet_lite0", "lite0")


def feature_maps(model, x):
    """{'m4': stride-16 112-ch, 'm5': stride-32 192-ch, 'f': the 1280-ch head map} of a batch."""
    h = model.bn1(model.conv_stem(x))
    out = {}
    for i, stage in enumerate(model.blocks):
        h = stage(h)
        if i == 4:
            out["m4"] = h
        elif i == 5:
            out["m5"] = h
    out["f"] = model.bn2(model.conv_head(h))
    return out


def pools(maps) -> dict:
    import torch
    f = maps["f"].flatten(2)                         # (B, C, P)
    k = max(1, int(round(0.05 * f.shape[2])))
    return {"mean": f.mean(2), "max": f.amax(2),
            "gem": f.clamp_min(1e-6).pow(3).mean(2).pow(1 / 3),
            "top": f.topk(k, dim=2).values.mean(2),
            "m4max": maps["m4"].flatten(2).amax(2), "m5max": maps["m5"].flatten(2).amax(2),
            "m4mean": maps["m4"].flatten(2).mean(2)}


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def run_pass(name: str, paths, threads: int) -> dict:
    import torch
    torch.set_num_threads(threads)
    mode, size, gray = parse_pass(name)
    model = backbone()
    rows: dict[str, list] = {}
    started = time.perf_counter()
    with torch.inference_mode():
        if mode in ("crop", "fit"):
            for b in range(0, len(paths), 16):
                x = torch.stack([prepare(p, mode, size, gray) for p in paths[b:b + 16]])
                maps = feature_maps(model, x)
                for k, v in pools(maps).items():
                    rows.setdefault(k, []).append(v.numpy())
                if mode == "fit":   # the map itself, for the anomaly-weighted (PatchCore-style) pools
                    rows.setdefault("fmap", []).append(maps["f"].to(torch.float16).numpy())
        elif mode == "aspect":
            for p in paths:
                for k, v in pools(feature_maps(model, prepare(p, mode, size, gray)[None])).items():
                    rows.setdefault(k, []).append(v.numpy())
        else:
            for b in range(0, len(paths), 4):
                x = torch.stack([prepare(p, mode, size, gray) for p in paths[b:b + 4]])
                boxes = [(r, c) for r in tile_starts(size, 224, 112) for c in tile_starts(size, 224, 112)]
                tiles = torch.cat([x[:, :, r:r + 224, c:c + 224] for r, c in boxes])    # (T·B, 3, 224, 224)
                per_tile = feature_maps(model, tiles)["f"].mean((2, 3))
                per_tile = per_tile.view(len(boxes), len(x), -1).permute(1, 0, 2)     # (B, T, 1280)
                out = {"tmean": per_tile.mean(1), "tmax": per_tile.amax(1),
                       "tgem": per_tile.clamp_min(1e-6).pow(3).mean(1).pow(1 / 3)}
                for k, v in out.items():
                    rows.setdefault(k, []).append(v.numpy())
    result = {k: np.concatenate(v) if k == "fmap" else np.concatenate(v).astype(np.float32) for k, v in rows.items()}
    result["seconds"] = np.array(time.perf_counter() - started)
    return result


def cached_pass(cache: Path, subset: str, name: str, paths, threads: int) -> dict:
    cache.mkdir(parents=True, exist_ok=True)
    file = cache / f"{subset}-{name}-n{len(paths)}.npz"
    if file.exists():
        with np.load(file) as data:
            return dict(data)
    result = run_pass(name, paths, threads)
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **result)
    os.replace(tmp, file)
    print(f"  [{name}: {len(paths)} images in {float(result['seconds']):.0f} s]", flush=True)
    return result


# ---------------------------------------------------------------- closed-form heads
def _norm(x):
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)


def head_predict(head: str, hyper, xtr, ytr, xte, n_classes: int) -> np.ndarray:
    xtr, xte = _norm(xtr.astype(np.float64)), _norm(xte.astype(np.float64))
    mu = xtr.mean(0)
    xtr, xte = xtr - mu, xte - mu
    means = np.stack([xtr[ytr == c].mean(0) if (ytr == c).any() else np.zeros(xtr.shape[1])
                      for c in range(n_classes)])
    if head == "ncm":
        return (_norm(xte) @ _norm(means).T).argmax(1)
    if head == "fecam":
        # shared covariance of the class residuals, shrunk towards (trace/d)·I; computed in the span of
        # the residuals (rank ≤ n) — outside it the shrunk covariance is isotropic: exact and cheap
        resid = xtr - means[ytr]
        d = xtr.shape[1]
        _, sv, vt = np.linalg.svd(resid, full_matrices=False)
        lam = sv ** 2 / max(1, len(xtr) - n_classes)
        t = lam.sum() / d
        diff = xte[:, None, :] - means[None]                     # (n, K, d)
        proj = diff @ vt.T                                       # (n, K, r)
        inside = (proj ** 2 / ((1 - hyper) * lam + hyper * t)).sum(2)
        outside = ((diff ** 2).sum(2) - (proj ** 2).sum(2)) / (hyper * t)
        return (inside + outside).argmin(1)
    if head == "ridge":
        y = np.eye(n_classes)[ytr]
        y = y - y.mean(0)
        gram = xtr @ xtr.T
        lam = hyper * np.trace(gram) / len(gram)
        alpha = np.linalg.solve(gram + lam * np.eye(len(gram)), y)
        return (xte @ (xtr.T @ alpha)).argmax(1)
    raise ValueError(head)


HEADS = {"ncm": [None], "fecam": [0.02, 0.05, 0.1, 0.2, 0.4, 0.7, 0.9], "ridge": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]}


def cv_predict(head, hyper, x, y, folds, n_classes):
    pred = np.zeros(len(y), int)
    for f in np.unique(folds):
        tr, va = folds != f, folds == f
        pred[va] = head_predict(head, hyper, x[tr], y[tr], x[va], n_classes)
    return pred


def balanced(y, pred):
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def evaluate(x_train, y_train, folds, x_test, y_test, n_classes, heads=None):
    """Per head: the hyper chosen on the group folds, its validation accuracy, then test accuracy."""
    out = []
    for head, grid in HEADS.items():
        if heads and head not in heads:
            continue
        best = None
        for hyper in grid:
            pred = cv_predict(head, hyper, x_train, y_train, folds, n_classes)
            acc = float((pred == y_train).mean())
            if best is None or acc > best[1] + 1e-9:
                best = (hyper, acc, balanced(y_train, pred))
        test_pred = head_predict(head, best[0], x_train, y_train, x_test, n_classes)
        out.append({"head": head, "hyper": best[0], "val": best[1], "val_bal": best[2],
                    "test": float((test_pred == y_test).mean()), "test_bal": balanced(y_test, test_pred),
                    "test_pred": test_pred})
    return out


def anomaly_pooled(fmap: np.ndarray, bank_rows: np.ndarray, top: float = 0.1, dims: int = 256,
                   bank_size: int = 3000, seed: int = 0) -> np.ndarray:
    """PatchCore-style: each position's distance to its nearest *defect-free* training position (a bank of
    the ``bank_rows`` images' positions, an image never compared with its own), then the mean of the
    ``top`` fraction most anomalous positions' features, and the max anomaly itself. (N, C + 1)."""
    import torch
    n, c, h, w = fmap.shape
    patches = torch.from_numpy(fmap.astype(np.float32)).flatten(2).transpose(1, 2)   # (N, P, C)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(c, dims, generator=g) / dims ** 0.5
    z = torch.nn.functional.normalize(patches @ proj, dim=2)                          # (N, P, dims)
    owner = torch.arange(n).repeat_interleave(h * w)
    bank_idx = torch.from_numpy(bank_rows)
    bank = z[bank_idx].reshape(-1, dims)
    bank_owner = bank_idx.repeat_interleave(h * w)
    if len(bank) > bank_size:
        keep = torch.randperm(len(bank), generator=g)[:bank_size]
        bank, bank_owner = bank[keep], bank_owner[keep]
    flat = z.reshape(-1, dims)
    best = torch.empty(len(flat))
    for b in range(0, len(flat), 8192):
        sim = flat[b:b + 8192] @ bank.T
        sim[owner[b:b + 8192, None] == bank_owner[None]] = -2.0
        best[b:b + 8192] = sim.amax(1)
    anomaly = (1 - best).view(n, h * w)
    k = max(1, int(round(top * h * w)))
    idx = anomaly.topk(k, dim=1).indices                                              # (N, k)
    pooled = torch.gather(patches, 1, idx[:, :, None].expand(-1, -1, c)).mean(1)
    return torch.cat([pooled, anomaly.amax(1, keepdim=True)], 1).numpy()


def evaluate_anomaly(store, y_train, folds, y_test, n_classes, free: int, n_tr: int, heads=None):
    """The anomaly-pooled features, with the bank rebuilt from each fold's own training part."""
    out = []
    x_parts = {}
    for f in list(np.unique(folds)) + ["final"]:
        rows = np.flatnonzero((y_train == free) & ((folds != f) if f != "final" else True))
        x_parts[f] = anomaly_pooled(store["fmap"], rows)
    for head, grid in HEADS.items():
        if heads and head not in heads:
            continue
        best = None
        for hyper in grid:
            pred = np.zeros(len(y_train), int)
            for f in np.unique(folds):
                x = x_parts[f]
                tr, va = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                pred[va] = head_predict(head, hyper, x[tr], y_train[tr], x[va], n_classes)
            acc = float((pred == y_train).mean())
            if best is None or acc > best[1] + 1e-9:
                best = (hyper, acc, balanced(y_train, pred))
        x = x_parts["final"]
        test_pred = head_predict(head, best[0], x[:n_tr], y_train, x[n_tr:], n_classes)
        out.append({"head": head, "hyper": best[0], "val": best[1], "val_bal": best[2],
                    "test": float((test_pred == y_test).mean()), "test_bal": balanced(y_test, test_pred),
                    "test_pred": test_pred})
    return out


def features_of(store: dict, pool: str) -> np.ndarray:
    parts = [store[p] for p in pool.split("+")]
    return np.concatenate([_norm(p) for p in parts], 1) if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------- trainable blocks under SG-RL / SG-KD
SG_SPEC = "effnet-lite0+use-m3"


def sg_prefix(cache: Path, subset: str, name: str, k: int, paths, threads: int, encoder, pool: str = "mean"):
    """Prefix outputs (N, C, h, w) of the product's PretrainedCNNSplit with k trainable blocks, on the
    inputs of pass ``name`` (crop / fit only); k = 0 with ``--sg-pool``: that pool of the frozen pass."""
    import torch
    torch.set_num_threads(threads)
    if k == 0:   # the k = 0 prefix output is the pass's mean pool (or the pool asked for)
        return torch.from_numpy(features_of(cached_pass(cache, subset, name, paths, threads), pool))
    mode, size, gray = parse_pass(name)
    file = cache / f"{subset}-{name}-sgk{k}-n{len(paths)}.npy"
    if file.exists():
        return torch.from_numpy(np.load(file))
    torch.manual_seed(0)
    model = encoder.build_image_model(trainable_blocks=k, input_size=size).eval()
    out = []
    with torch.inference_mode():
        for b in range(0, len(paths), 16):
            x = torch.stack([prepare(p, mode, size, gray) for p in paths[b:b + 16]])
            out.append(model.prefix(x).float().to(torch.float16))
    array = torch.cat(out).numpy()
    fd, tmp = tempfile.mkstemp(dir=cache, suffix=".npy")
    os.close(fd)
    np.save(tmp, array)
    os.replace(tmp, file)
    return torch.from_numpy(array)


def sg_fit_predict(encoder, name: str, k: int, tasks: int, h_tr, y_tr, h_te, U, W, seed: int = 0):
    """Train the product's learner (method ``both`` = SG-RL + SG-KD, the registry's schedule, k blocks)
    on ``tasks`` tasks of the classes in order, then score ``h_te``: (cosine-head predictions, the
    trained features of train and test for the closed-form heads)."""
    import torch
    from core.encoders import default_config
    from core.sg import ContinualLearner
    from core.sg.data import FeatureDataset

    _, size, _ = parse_pass(name)
    config = default_config(SG_SPEC, trainable_blocks=k, method="both", seed=seed, device="cpu")
    torch.manual_seed(seed)
    learner = ContinualLearner(encoder.build_image_model(trainable_blocks=k, input_size=size),
                               encoder.logit_scale, config)
    n_classes = int(U.shape[0])
    split = np.array_split(np.arange(n_classes), tasks)
    ids = torch.arange(len(y_tr))
    for t, classes in enumerate(split):
        seen = int(classes[-1]) + 1
        rows = np.flatnonzero(np.isin(y_tr, classes))
        data = FeatureDataset(h_tr[rows][:, None], torch.as_tensor(y_tr[rows]), ids[rows])
        learner.learn_task(t, data, U[:seen], W[:seen], new_class_ids=[int(c) for c in classes])
    pred = learner.class_scores(h_te, W).argmax(1).numpy()
    return pred, learner.image_features(h_tr).numpy(), learner.image_features(h_te).numpy()


def run_sg(args, classes, train_paths, y_train, folds, test_paths, y_test) -> None:
    import torch
    from core.encoders import load_encoder
    from core.experiment import DEFAULT_TEMPLATE

    encoder = load_encoder(SG_SPEC)
    U = encoder.encode_names(classes).float()
    W = encoder.encode_prompts([DEFAULT_TEMPLATE.format(c) for c in classes]).float()
    print("| pass | k | tasks | head | val acc | val bal | test acc | test bal | train s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.passes:
        for k in args.sg:
            h = sg_prefix(args.cache, args.subset, name, k, train_paths + test_paths, args.threads, encoder,
                          args.sg_pool)
            h_tr, h_te = h[:len(train_paths)], h[len(train_paths):]
            for tasks in args.sg_tasks:
                started = time.perf_counter()
                val = {"sg": np.zeros(len(y_train), int), "sg+ncm": np.zeros(len(y_train), int),
                       "sg+ridge": np.zeros(len(y_train), int)}
                for f in range(folds.max() + 1) if args.sg_folds else []:
                    tr, va = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
                    pred, ftr, fva = sg_fit_predict(encoder, name, k, tasks, h_tr[tr], y_train[tr], h_tr[va], U, W)
                    val["sg"][va] = pred
                    val["sg+ncm"][va] = head_predict("ncm", None, ftr, y_train[tr], fva, len(classes))
                    val["sg+ridge"][va] = head_predict("ridge", 0.1, ftr, y_train[tr], fva, len(classes))
                pred, ftr, fte = sg_fit_predict(encoder, name, k, tasks, h_tr, y_train, h_te, U, W)
                test = {"sg": pred, "sg+ncm": head_predict("ncm", None, ftr, y_train, fte, len(classes)),
                        "sg+ridge": head_predict("ridge", 0.1, ftr, y_train, fte, len(classes))}
                seconds = time.perf_counter() - started
                for head, tp in test.items():
                    v = (f"{100 * (val[head] == y_train).mean():.1f} | {100 * balanced(y_train, val[head]):.1f}"
                         if args.sg_folds else "- | -")
                    print(f"| {name}{'' if k or args.sg_pool == 'mean' else ' ' + args.sg_pool} | {k} | {tasks} | {head} | {v} | {100 * (tp == y_test).mean():.1f} | "
                          f"{100 * balanced(y_test, tp):.1f} | {seconds:.0f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", default="magnetic_tile")
    ap.add_argument("--passes", nargs="+", default=DEFAULT_PASSES)
    ap.add_argument("--pools", nargs="+", default=None, help="pools to report (default: all)")
    ap.add_argument("--heads", nargs="+", default=None)
    ap.add_argument("--per-class", type=int, default=None,
                    help="other subsets: first N train / N//2 test images per class (CPU budget)")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/sgcl-defects-cache"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sg", nargs="+", type=int, default=None,
                    help="instead of the frozen table: train k blocks (each k given) with SG-RL + SG-KD")
    ap.add_argument("--sg-tasks", nargs="+", type=int, default=[1, 3], help="tasks the 6 classes come in")
    ap.add_argument("--sg-pool", default="mean", help="k = 0: which pool of the frozen pass feeds the projection")
    ap.add_argument("--sg-folds", action="store_true", help="also the 4 group folds (validation) for --sg")
    ap.add_argument("--combine", nargs="+", default=[],
                    help="extra rows: features of several cached passes concatenated, e.g. fit224:gem,fit448:gem")
    ap.add_argument("--confusion", default=None, help="print the test confusion matrix of PASS:POOL:HEAD")
    args = ap.parse_args()
    root = SHARED / args.subset
    if not root.is_dir():
        print(f"the shared dataset is not at {root}", file=sys.stderr)
        return 2
    np.random.seed(0)
    classes, train_paths, y_train = list_split(root, "train", args.per_class)
    _, test_paths, y_test = list_split(root, "test", args.per_class // 2 if args.per_class else None)
    if args.subset == "magnetic_tile":
        groups = defect_groups(train_paths, y_train)
    else:   # no repeat captures: every image its own group
        groups = np.arange(len(train_paths))
    folds = group_folds(y_train, groups)
    n_groups = {c: len(set(groups[y_train == i])) for i, c in enumerate(classes)}
    print(f"{args.subset}: {len(train_paths)} train ({sum(n_groups.values())} groups) / {len(test_paths)} test, "
          f"{len(classes)} classes; 4 group folds, fold sizes {np.bincount(folds).tolist()}")
    if args.subset == "magnetic_tile":
        print("groups per class (train): " + ", ".join(f"{c} {n}" for c, n in n_groups.items()))
    print()
    if args.sg is not None:
        run_sg(args, classes, train_paths, y_train, folds, test_paths, y_test)
        return 0
    print("| pass | pool | head | hyper | val acc | val bal | test acc | test bal |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    paths = train_paths + test_paths
    n_tr = len(train_paths)
    for name in args.passes:
        store = cached_pass(args.cache, args.subset, name, paths, args.threads)
        pool_names = TILE_POOLS if name.startswith("tiles") else POOLS
        if "fmap" in store and "free" in classes:
            pool_names = pool_names + ["anomaly"]
        for pool in pool_names:
            if args.pools and pool not in args.pools:
                continue
            if pool == "anomaly":
                rows = evaluate_anomaly(store, y_train, folds, y_test, len(classes), classes.index("free"), n_tr,
                                        args.heads)
            else:
                x = features_of(store, pool)
                rows = evaluate(x[:n_tr], y_train, folds, x[n_tr:], y_test, len(classes), args.heads)
            for r in rows:
                print(f"| {name} | {pool} | {r['head']} | {r['hyper'] if r['hyper'] is not None else '-'} | "
                      f"{100 * r['val']:.1f} | {100 * r['val_bal']:.1f} | {100 * r['test']:.1f} | "
                      f"{100 * r['test_bal']:.1f} |", flush=True)
                if args.confusion == f"{name}:{pool}:{r['head']}":
                    cm = np.zeros((len(classes), len(classes)), int)
                    for t, p in zip(y_test, r["test_pred"]):
                        cm[t, p] += 1
                    print("\ntest confusion (rows true, columns predicted): " + " ".join(classes))
                    for c, row in zip(classes, cm):
                        print(f"{c:>9} " + " ".join(f"{v:3d}" for v in row))
                    print()
    for combo in args.combine:
        parts = []
        for item in combo.split(","):
            name, pool = item.split(":")
            store = cached_pass(args.cache, args.subset, name, paths, args.threads)
            parts.append(_norm(features_of(store, pool)))
        x = np.concatenate(parts, 1)
        for r in evaluate(x[:n_tr], y_train, folds, x[n_tr:], y_test, len(classes), args.heads):
            print(f"| {combo} | concat | {r['head']} | {r['hyper'] if r['hyper'] is not None else '-'} | "
                  f"{100 * r['val']:.1f} | {100 * r['val_bal']:.1f} | {100 * r['test']:.1f} | "
                  f"{100 * r['test_bal']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
