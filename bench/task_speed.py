"""How long one new task takes once its images' features are cached, and how long a prediction takes,
with the active (default: pretrained) encoder, on this machine. Issue 11 targets: a 2-class task of 40
images per class learned in ≤ 15 s after caching; Predict answers in < 0.5 s.

    .venv/bin/python bench/task_speed.py /tmp/task-speed-home [/path/to/cifar10] [--classes airplane ship]

Prints: feature caching (images/s), the train job's wall time (feature cache warm), prediction latency,
and how many test images of trained and of untrained classes Predict rejects.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import features, images, jobs, labels, runs  # noqa: E402
from core.auth import Actor  # noqa: E402
from core.encoders import active_encoder_spec  # noqa: E402
from core.prediction import predict_image  # noqa: E402
from core.store import Store  # noqa: E402
from core.training import run_train_job  # noqa: E402
from core.perf import tune_allocator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("home", type=Path)
    ap.add_argument("data", nargs="?", type=Path,
                    default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10")
    ap.add_argument("--classes", nargs=2, default=["airplane", "ship"])
    ap.add_argument("--per-class", type=int, default=50, help="images per class (about 80 %% train)")
    ap.add_argument("--predict-per-class", type=int, default=10, help="test images per class sent to Predict")
    args = ap.parse_args()
    tune_allocator()   # as the worker does
    if args.home.exists():
        shutil.rmtree(args.home)
    store = Store(args.home)
    who = Actor("bench", "reviewer")
    ids = []
    for name in args.classes:
        label = labels.propose(store, who, name, create_entry=True)
        labels.approve(store, who, label["id"])
        files = sorted((args.data / "train" / name).iterdir())[: args.per_class]
        images.ingest_uploads(store, who, label["id"], [(f.name, f.read_bytes()) for f in files])
        ids.append(label["id"])
    counts = images.readiness(store, ids)
    print("encoder", active_encoder_spec(store), "| images per label (train+holdout):",
          {i: (c.n_train, c.n_holdout) for i, c in counts.items()})
    run = runs.create_run(store, who, "speed")
    t0 = time.perf_counter()
    cached = 0
    while True:
        n = features.fill_missing(store, limit=256)
        if not n:
            break
        cached += n
    took = time.perf_counter() - t0
    print(f"feature caching: {cached} images in {took:.1f} s ({cached / max(took, 1e-9):.1f} img/s)")
    queued = runs.request_task(store, who, run["id"], ids)
    job = jobs.claim(store, "bench-worker")
    assert job["id"] == queued["job_id"]
    t1 = time.perf_counter()
    run_train_job(store, job, worker_id="bench-worker", device="cpu")
    print(f"train job, 2 classes, features cached: {time.perf_counter() - t1:.1f} s "
          f"(config epochs {run['config']['epochs']}, batch {run['config']['batch_size']})")
    sample = sorted((args.data / "test" / args.classes[0]).iterdir())[0].read_bytes()
    predict_image(store, who, run["id"], sample)   # first call loads the model
    times = []
    for _ in range(5):
        t2 = time.perf_counter()
        predict_image(store, who, run["id"], sample)
        times.append(time.perf_counter() - t2)
    print(f"predict (uploaded image, not cached): median {1000 * statistics.median(times):.0f} ms")

    # What a user sees on Predict: test images of the trained classes should be accepted, images of
    # classes never trained should be answered "not one of the trained classes".
    trained, others = set(args.classes), [p for p in sorted((args.data / "test").iterdir()) if p.name not in args.classes]
    for title, folders in (("trained classes", [args.data / "test" / c for c in args.classes]),
                           ("untrained classes", others)):
        answers = [predict_image(store, who, run["id"], f.read_bytes())
                   for folder in folders for f in sorted(folder.iterdir())[:args.predict_per_class]]
        rejected = sum(a["rejected"] for a in answers)
        right = sum(not a["rejected"] and a["predictions"][0]["canonical"] in trained for a in answers)
        print(f"predict, {title} ({len(answers)} test images): rejected {rejected} "
              f"({100 * rejected / len(answers):.0f} %)" + (f", accepted and right {right}" if folders[0].name in trained else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
