"""Time a closed-form head's tasks once features are cached (issue 17 target: ≤ 2 s each).

Builds the default encoder's model (EfficientNet-Lite0, k = 0: the cached prefix output is the pooled
1280-d feature), then for each head: a 2-class task of 40 images per class on top of 20 learned classes,
then an update task that adds 10 images to a trained class, each followed by the first prediction
(which derives the classifier from the statistics). Features are random vectors of the right shape:
the cost of a closed-form head does not depend on their values.

    .venv/bin/python bench/head_speed.py [--methods fecam ranpac ncm] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["fecam", "ranpac", "ncm"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import timm
    import torch
    import torch.nn.functional as F

    from core.sg import ContinualLearner, FeatureDataset, LearnerConfig
    from core.sg.models import PretrainedCNNSplit

    torch.set_num_threads(args.threads)
    backbone = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    gen = torch.Generator().manual_seed(0)
    n_old, per_class = 20, 40
    feats = torch.rand((n_old + 2) * per_class, 1, 1280, generator=gen)
    labels = torch.arange(n_old + 2).repeat_interleave(per_class)
    W = F.normalize(torch.randn(n_old + 2, 512, generator=gen), dim=1)
    extra = torch.rand(10, 1, 1280, generator=gen)
    print(f"torch threads {torch.get_num_threads()}")
    for method in args.methods:
        model = PretrainedCNNSplit(backbone, 512, trainable_blocks=0)
        learner = ContinualLearner(model, 15.0, LearnerConfig(method=method, device="cpu"))
        old = labels < n_old
        learner.learn_task(0, FeatureDataset(feats[old], labels[old], torch.arange(int(old.sum()))),
                           W[:n_old], W[:n_old], list(range(n_old)))
        learner.class_scores(feats[:1, 0], W[:n_old])
        new = ~old
        started, cpu = time.perf_counter(), time.process_time()
        learner.learn_task(1, FeatureDataset(feats[new], labels[new], torch.arange(int(new.sum())) + 10_000),
                           W, W, [n_old, n_old + 1])
        learner.class_scores(feats[:1, 0], W)
        task_s, task_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        learner.learn_task(2, FeatureDataset(extra, torch.zeros(10, dtype=torch.long), torch.arange(10) + 20_000),
                           W, W, [0])
        learner.class_scores(feats[:1, 0], W)
        update_s, update_cpu = time.perf_counter() - started, time.process_time() - cpu
        print(f"{method:>8}: 2-class task {task_s:.2f} s (CPU {task_cpu:.2f} s) · add 10 images to a trained "
              f"class {update_s:.2f} s (CPU {update_cpu:.2f} s), each including the first prediction after it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
