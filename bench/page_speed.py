"""Page render times with a realistic data home (issue 12 item 7): 100 labels, 5,000 images and a run
of 20 completed tasks, the pages drawn by Streamlit's AppTest as each role that uses them, and the time
to answer a label proposal (core.labels.propose, and the live preview the form shows while typing).

    .venv/bin/python bench/page_speed.py [--home /tmp/sgcl-page-speed] [--runs 5] [--pages history,train]

The data home is built once (labels proposed and approved through core.labels, images ingested through
core.images.ingest_uploads exactly as the Images page does, 50 per label; tasks, metrics and jobs rows
as the worker writes them — History and Train read those tables, not the checkpoints) and reused on
the next call. Each page is run once to warm the process (encoder load, embeddings of every label,
st.cache_* entries — what a server has done before its second visitor) and then ``--runs`` times;
the table gives the first and the median of the others.

Targets: every page < 1 s median; a proposal < 0.5 s. Numbers go in the report with this command,
never in a timed test.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_LABELS, IMAGES_PER_LABEL, N_TASKS, LABELS_PER_TASK = 100, 50, 20, 5
TARGET_PAGE_S, TARGET_PROPOSE_S = 1.0, 0.5

# Who opens which page (the role that sees the most on it).
PAGES = {
    "labels": ("pages/labels.py", "reviewer"),
    "glossary_terms": ("pages/glossary_terms.py", "reviewer"),
    "neighbours": ("pages/neighbours.py", "reviewer"),
    "images": ("pages/images.py", "reviewer"),
    "train": ("pages/train.py", "reviewer"),
    "history": ("pages/history.py", "supervisor"),
    "predict": ("pages/predict.py", "supervisor"),
    "audit": ("pages/audit.py", "admin"),
    "admin": ("pages/admin.py", "admin"),
}
USERS = {"admin": "admin", "rei": "reviewer", "eri": "expert", "sora": "supervisor"}


def _image_bytes(rng: random.Random, base: tuple[int, int, int]) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (40, 32), tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = rng.randrange(40), rng.randrange(32)
        draw.line((x, y, x + rng.randint(-10, 10), y + rng.randint(-10, 10)), fill=(rng.randrange(256),) * 3)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def build_home(home: Path) -> None:
    """The data home described above (about a minute on 2 cores, mostly re-encoding 5,000 images)."""
    from core import images, labels, runs, users
    from core.auth import SYSTEM, Actor
    from core.glossary_store import seed_if_empty
    from core.store import Store, now_iso

    store = Store(home)
    seed_if_empty(store)
    for name, role in USERS.items():
        users.create_user(store, SYSTEM, name, f"bench pass phrase {name} 9", role)
    expert, reviewer = Actor("eri", "expert"), Actor("rei", "reviewer")
    rng = random.Random(0)
    started = time.perf_counter()
    label_ids = []
    for i in range(N_LABELS):
        # Half Japanese, half English names no starter term folds onto: each becomes a new draft term.
        name = f"部品{i:03d}番" if i % 2 == 0 else f"part {i:03d}"
        label = labels.propose(store, expert, name, create_entry=True)
        labels.approve(store, reviewer, label["id"])
        base = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        files = [(f"{i:03d}-{j:02d}.png", _image_bytes(rng, base)) for j in range(IMAGES_PER_LABEL)]
        images.ingest_uploads(store, expert, label["id"], files)
        label_ids.append(label["id"])
        if i % 10 == 9:
            print(f"  {i + 1} labels, {(i + 1) * IMAGES_PER_LABEL} images ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    # A run of 20 completed tasks, written the way the queue and the worker write them.
    run = runs.create_run(store, reviewer, "bench 20 tasks", config={"epochs": 2})
    for t in range(N_TASKS):
        ids = label_ids[t * LABELS_PER_TASK:(t + 1) * LABELS_PER_TASK]
        queued = runs.request_task(store, reviewer, run["id"], ids, {"epochs": 3} if t == 4 else None)
        job_id = queued["job_id"]
        store.execute("UPDATE jobs SET status = 'done', progress = 1.0, worker = 'bench', attempts = 1, "
                      "started_at = ?, finished_at = ? WHERE id = ?", (now_iso(), now_iso(), job_id))
        store.execute("UPDATE tasks SET status = 'done' WHERE id = ?", (queued["task"]["id"],))
        for u in range(t + 1):
            acc = max(0.05, 0.95 - 0.02 * (t - u) - 0.01 * rng.random())
            store.db["metrics"].insert({"run_id": run["id"], "trained_task": t, "eval_task": u, "acc": acc,
                                        "acc_task_aware": min(1.0, acc + 0.03), "rejected": 0.05 + 0.01 * (t - u),
                                        "n_classes": LABELS_PER_TASK * (t + 1), "n_images": 50,
                                        "created_at": now_iso()})
        labels.mark_trained(store, reviewer, ids)
        store.audit("bench", "task.done", "task", queued["task"]["id"], run_id=run["id"], idx=t)
    store.execute("INSERT INTO workers (id, pid, host, device, started_at, heartbeat_at) VALUES (?,?,?,?,?,?)",
                  ("bench-worker", 1, socket.gethostname(), "cpu", now_iso(), time.time() + 10 * 365 * 86400))
    n = store.query_one("SELECT COUNT(*) AS n FROM images")["n"]
    print(f"built {home}: {N_LABELS} labels, {n} images, {N_TASKS} tasks "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    store.close()


def keep_worker_alive(home: Path) -> None:
    """The pages must not spawn a real worker: a registered one with a far-future heartbeat."""
    from core.store import Store, now_iso

    store = Store(home)
    store.execute("INSERT OR REPLACE INTO workers (id, pid, host, device, started_at, heartbeat_at) "
                  "VALUES (?,?,?,?,?,?)", ("bench-worker", 1, socket.gethostname(), "cpu", now_iso(),
                                            time.time() + 10 * 365 * 86400))
    store.close()


def logged_in(script: str, home: Path, username: str, lang: str):
    """The app as a browser gets it: app.py (sidebar, navigation, start-up check) with ``script`` as
    the current page, and ``username`` logged in through a server-side session."""
    from streamlit.testing.v1 import AppTest

    from core import sessions
    from core.store import Store
    from pages.ui import SESSION_KEY

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    store = Store(home)
    at.session_state[SESSION_KEY] = sessions.start(store, username).token
    store.close()
    at.session_state["lang"] = lang
    at.run()
    at.switch_page(script)
    return at


def _type_name(at, i: int) -> None:
    at.text_input(key="propose_name").input("飛行機")          # the live preview and dictionary look-ups


def _propose(at, i: int) -> None:
    at.text_input(key="propose_name").input(f"検査品{int(time.time())}-{i}")
    at.run()
    at.button(key="propose_submit").click()


# Interactions timed on top of the plain page views: (page, what the user does before the timed run).
SCENARIOS = {
    "labels:typing": ("labels", _type_name),
    "labels:propose": ("labels", _propose),
}


def time_page(name: str, home: Path, runs: int, lang: str) -> tuple[float, float, list[float]]:
    page, prepare = SCENARIOS.get(name, (name, None))
    script, role = PAGES[page]
    username = next(u for u, r in USERS.items() if r == role)
    if page == "labels" and prepare is not None:
        username = "eri"          # the proposer
    at = logged_in(script, home, username, lang)
    times = []
    for i in range(runs + 1):
        if prepare is not None:
            if i == 0:
                at.run()
            prepare(at, i)
        started = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - started)
        if at.exception:
            raise SystemExit(f"{name}: {at.exception[0].message}")
    return times[0], statistics.median(times[1:]), times[1:]


def time_proposals(home: Path, n: int) -> tuple[float, float]:
    """Median seconds of the live preview (glossary lookup per keystroke) and of propose() itself."""
    from core import labels
    from core.auth import Actor
    from core.store import Store

    store = Store(home)
    expert = Actor("eri", "expert")
    labels.preview(store, "キズ")        # warm: the glossary index is built once per revision
    previews, proposals = [], []
    stamp = int(time.time())
    for i in range(n):
        name = f"試作品{stamp}-{i}"
        started = time.perf_counter()
        labels.preview(store, name)
        previews.append(time.perf_counter() - started)
        started = time.perf_counter()
        labels.propose(store, expert, name, create_entry=True)
        proposals.append(time.perf_counter() - started)
    store.close()
    return statistics.median(previews), statistics.median(proposals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default="/tmp/sgcl-page-speed", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lang", default="ja")
    parser.add_argument("--pages", default=",".join([*PAGES, *SCENARIOS]))
    parser.add_argument("--proposals", type=int, default=5)
    args = parser.parse_args()
    os.environ["SGCL_HOME"] = str(args.home.resolve())
    from core.encoders import active_encoder_spec
    from core.store import Store

    if not (args.home / "sgcl.db").exists():
        build_home(args.home)
    keep_worker_alive(args.home)
    print(f"encoder: {active_encoder_spec(Store(args.home))}   cores: {os.cpu_count()}   "
          f"load: {os.getloadavg()[0]:.1f}", flush=True)
    import logging

    logging.getLogger("streamlit").setLevel(logging.ERROR)   # AppTest's bare-mode warnings
    print(f"{'page':<16}{'first s':>9}{'median s':>10}   runs", flush=True)
    slow = []
    for name in [p.strip() for p in args.pages.split(",") if p.strip()]:
        first, median, times = time_page(name, args.home, args.runs, args.lang)
        flag = "" if median < TARGET_PAGE_S else "   > target"
        slow += [name] if flag else []
        print(f"{name:<16}{first:9.2f}{median:10.2f}   {' '.join(f'{t:.2f}' for t in times)}{flag}", flush=True)
    preview_s, propose_s = time_proposals(args.home, args.proposals)
    print(f"{'propose':<16}{'':9}{propose_s:10.3f}   (live preview per keystroke: {preview_s:.3f} s)"
          + ("" if propose_s < TARGET_PROPOSE_S else "   > target"), flush=True)
    print(json.dumps({"slow_pages": slow, "propose_s": round(propose_s, 3)}))


if __name__ == "__main__":
    main()
