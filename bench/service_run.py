"""A 5-task run on the CIFAR-10 subset with the active encoder (the pretrained default unless
SGCL_ENCODER says otherwise), through the same service calls the browser's Train page makes, learned
by a real worker process. Prints the wall time (feature caching included), the time of each task and
the latency of a prediction.

    .venv/bin/python bench/service_run.py /tmp/bench-home [/path/to/cifar10]

Target (issue 11): ≤ 90 s wall for the 5 tasks on the 2-core machine including feature caching;
a prediction < 0.5 s.
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import images, jobs, runs  # noqa: E402
from core.auth import Actor  # noqa: E402
from core.encoders import active_encoder_spec  # noqa: E402
from core.prediction import predict_image  # noqa: E402
from core.store import Store  # noqa: E402

home = Path(sys.argv[1])
store = Store(home)
rev = Actor("bench", "reviewer")
t0 = time.time()
data = sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).resolve().parents[2] / "shared/datasets/cifar10")
imp = images.import_folder(store, rev, data, create_labels=True)
print("import", round(time.time() - t0, 1), "s", images.summarize(imp.results), flush=True)
order = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
ids = [imp.labels[n] for n in order]
run = runs.create_run(store, rev, f"cifar10-5x2-{active_encoder_spec(store)}")
print("encoder", run["encoder"], "config", json.dumps(run["config"]), flush=True)
for t in range(5):
    runs.request_task(store, rev, run["id"], ids[2 * t:2 * t + 2])
t1 = time.time()
env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
subprocess.run([sys.executable, "-m", "core.worker", "--home", str(home), "--exit-when-idle"], check=True, env=env)
wall = time.time() - t1
for j in sorted(jobs.list_jobs(store, run_id=run["id"]), key=lambda j: j["id"]):
    took = (datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["started_at"])).total_seconds() \
        if j["finished_at"] and j["started_at"] else None
    print("job", j["id"], "task", j["payload"]["task_idx"] + 1, j["status"], f"{took:.0f} s" if took is not None else "",
          (j["error"] or "")[-300:])
s = runs.run_summary(store, run["id"])
print("acc matrix", [[round(v, 3) for v in r] for r in s["acc"]])
print("summary", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (s["summary"] or {}).items()
                  if k in ("aia", "last", "forgetting", "bwt")})
sample = next(Path(data, "test", "cat").iterdir()).read_bytes()
predict_image(store, rev, run["id"], sample)            # loads the model once
t2 = time.perf_counter()
answer = predict_image(store, rev, run["id"], sample)
print(f"predict: {1000 * (time.perf_counter() - t2):.0f} ms (top: {answer['predictions'][0]['name']}, "
      f"rejected {answer['rejected']})")
print("WALL training (5 tasks, worker process incl. start-up and feature caching):", round(wall, 1), "s")
