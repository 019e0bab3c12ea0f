"""Accuracy of each prefix engine against fp32 on the shared data sets: the default backbone's pooled
features of every train and test image, computed once per engine, then two frozen-feature heads —
NCM (cosine to the class means of the training features) and a closed-form ridge head (one-hot ridge
regression on the L2-normalised features, λ = 1e-2·trace/d) — scored on the test images. Also prints
the cosine between each engine's features and fp32's (mean and worst image).

    .venv/bin/python bench/prefix_accuracy.py [--data ../shared/datasets] [--engines fp32,bf16,int8]
        [--subsets cifar10,caltech101,flowers102,magnetic_tile] [--out /tmp/prefix-accuracy]

Features go through the same feature cache as `core.cli experiment` (default root: the shared experiment
cache, keys as the experiment makes them), so each engine's entries are computed once and reused.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def heads(train, ytr, test, yte, classes):
    import torch
    import torch.nn.functional as F

    train, test = F.normalize(train.double(), dim=1), F.normalize(test.double(), dim=1)
    means = torch.stack([train[ytr == c].mean(0) for c in range(classes)])
    ncm = (F.normalize(means, dim=1) @ test.T).argmax(0)
    onehot = F.one_hot(ytr, classes).double()
    gram = train.T @ train
    lam = 1e-2 * gram.trace() / gram.shape[0]
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), train.T @ onehot)
    ridge = (test @ w).argmax(1)
    return 100 * (ncm == yte).double().mean().item(), 100 * (ridge == yte).double().mean().item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "datasets"))
    ap.add_argument("--engines", default="fp32,int8")
    ap.add_argument("--subsets", default="cifar10,caltech101,flowers102,magnetic_tile")
    ap.add_argument("--cache", default="/tmp/sgcl-exp-cache/features")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from core.encoders import DEFAULT_SPEC, load_encoder
    from core.experiment import _path_key, scan_folder
    from core.perf import tune_allocator
    from core.sg.features import PrefixFeatureCache
    from core.sg.prefix_engine import supported

    tune_allocator()
    torch.set_num_threads(args.threads)
    encoder = load_encoder(DEFAULT_SPEC)
    model = encoder.build_image_model().eval()
    engines = args.engines.split(",")
    caches = {}
    for e in engines:
        if not supported(e, model):
            print(f"# {e}: not supported on this CPU, skipped")
            continue
        caches[e] = PrefixFeatureCache(args.cache, model, encoder.image_version, engine=e, decode_workers=2)
    print(f"{'subset':14} {'engine':6} {'NCM':>6} {'ridge':>6} {'ΔNCM':>6} {'Δridge':>7} {'cos mean':>9} {'cos min':>8} {'img/s (decode+prefix, computed now)':>6}")
    for subset in args.subsets.split(","):
        data = scan_folder(Path(args.data) / subset)
        tr = [(_path_key(p), str(p)) for p in data.train_paths]
        te = [(_path_key(p), str(p)) for p in data.eval_paths]
        ytr, yte = torch.as_tensor(data.train_labels), torch.as_tensor(data.eval_labels)
        classes = len(data.folders)
        results = {}
        for e, cache in caches.items():
            before, started = cache.computed, time.perf_counter()
            ftr, fte = cache.load(tr)[:, 0].float().flatten(1), cache.load(te)[:, 0].float().flatten(1)
            done = cache.computed - before
            rate = done / (time.perf_counter() - started) if done else float("nan")
            results[e] = (heads(ftr, ytr, fte, yte, classes), torch.cat([ftr, fte]), rate)
        base = results.get("fp32")
        for e, ((ncm, ridge), feats, rate) in results.items():
            if base is not None:
                cos = F.cosine_similarity(feats.double(), base[1].double(), dim=1)
                d1, d2, cm, cn = ncm - base[0][0], ridge - base[0][1], cos.mean().item(), cos.min().item()
            else:
                d1 = d2 = cm = cn = float("nan")
            print(f"{subset:14} {e:6} {ncm:6.2f} {ridge:6.2f} {d1:+6.2f} {d2:+7.2f} {cm:9.5f} {cn:8.5f} {rate:6.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
