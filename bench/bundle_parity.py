"""Parity of the exported bundle with the app on a shared dataset's test split (issue 18: identical top-1
on the golden images and on every shared subset's test split).

    .venv/bin/python bench/bundle_parity.py ../shared/datasets/magnetic_tile [/tmp/parity-home] [--tasks 2]

Imports ``train/`` and ``test/`` (test → holdout) with the active encoder (default: the embedded
EfficientNet-Lite0 + USE-m3), learns the classes in ``--tasks`` tasks, exports the bundle of every task
(its own parity check runs on the holdout = the test split), then classifies every test image of the
trained classes with the torch-free runtime and with the app's Predict service and counts agreements.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import images, jobs, runs  # noqa: E402
from core.auth import Actor  # noqa: E402

WHO = Actor("bench", "admin")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("home", nargs="?", default="/tmp/parity-home")
    ap.add_argument("--tasks", type=int, default=2)
    args = ap.parse_args()
    from core.deploy.bundle import export_bundle
    from core.prediction import predict_image
    from core.runtime import Bundle
    from core.store import Store
    from core.training import run_train_job

    home = Path(args.home)
    if home.exists():
        shutil.rmtree(home)
    store = Store(home)
    report = images.import_folder(store, WHO, args.data, create_labels=True)
    label_ids = sorted(report.labels.values())
    per = -(-len(label_ids) // args.tasks)
    run = runs.create_run(store, WHO, args.data.name)
    for t in range(args.tasks):
        runs.request_task(store, WHO, run["id"], label_ids[t * per:(t + 1) * per])
    for t in range(args.tasks):
        started = time.perf_counter()
        run_train_job(store, jobs.claim(store, "bench"), worker_id="bench", device="cpu")
        trained = time.perf_counter() - started
        started = time.perf_counter()
        path = export_bundle(store, WHO, run["id"], t)
        bundle = Bundle.open(path)
        parity = bundle.manifest["parity"]
        trained_ids = label_ids[:(t + 1) * per]
        marks = ",".join("?" * len(trained_ids))
        rows = store.query(f"SELECT path FROM images WHERE split = 'holdout' AND label_id IN ({marks})",  # nosec B608
                           tuple(trained_ids))
        data = [(store.home / r["path"]).read_bytes() for r in rows]
        preds = bundle.predict(data)
        same_top1 = same_unknown = 0
        for d, p in zip(data, preds):
            app = predict_image(store, WHO, run["id"], d)
            same_top1 += p.best_name == app["predictions"][0]["name"]
            same_unknown += p.unknown == app["rejected"]
        print(f"task {t + 1}: {len(trained_ids)} classes, trained in {trained:.0f} s; export + check "
              f"{time.perf_counter() - started:.0f} s ({parity['images']} holdout images, max |diff| "
              f"{parity['max_abs_diff']:.1e}); test split {len(data)} images: top-1 identical {same_top1}/{len(data)}, "
              f"unknown identical {same_unknown}/{len(data)}; holdout acc "
              + ", ".join(f"{a['id']}:{a['correct']}/{a['images']}" for a in bundle.manifest["holdout_accuracy"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
