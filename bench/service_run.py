"""A 5-task run on the CIFAR-10 subset with the active encoder (e5 by default), through the same service
calls the browser's Train page makes, learned by a real worker process. Prints the wall time.

    .venv/bin/python bench/service_run.py /tmp/bench-home [/path/to/cifar10]
"""
import json
import subprocess
import sys
import time
from pathlib import Path
from core.store import Store
from core.auth import Actor
from core import images, runs, jobs
home = Path(sys.argv[1]); store = Store(home)
rev = Actor("bench", "reviewer")
t0 = time.time()
data = sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).resolve().parents[2] / "shared/datasets/cifar10")
imp = images.import_folder(store, rev, data, create_labels=True)
print("import", round(time.time() - t0, 1), "s", images.summarize(imp.results), flush=True)
order = ["airplane","automobile","bird","cat","deer","dog","frog","horse","ship","truck"]
ids = [imp.labels[n] for n in order]
run = runs.create_run(store, rev, "cifar10-5x2-e5")
print("config", json.dumps(run["config"]), flush=True)
for t in range(5):
    runs.request_task(store, rev, run["id"], ids[2*t:2*t+2])
t1 = time.time()
subprocess.run([sys.executable, "-m", "core.worker", "--home", str(home), "--exit-when-idle"], check=True)
wall = time.time() - t1
for j in sorted(jobs.list_jobs(store, run_id=run["id"]), key=lambda j: j["id"]):
    print("job", j["id"], j["status"], j["started_at"], j["finished_at"], (j["error"] or "")[-300:])
s = runs.run_summary(store, run["id"])
print("acc matrix", [[round(v, 3) for v in r] for r in s["acc"]])
print("summary", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in (s["summary"] or {}).items() if k in ("aia","last","forgetting","bwt")})
print("WALL training (5 tasks, worker process incl. startup):", round(wall, 1), "s")
