"""Page times as a person waits for them: a real browser (Debian's chromium + Playwright, as in the
browser tests) clicks each sidebar link of `streamlit run app.py` and waits until the page has finished
drawing, on the data home of bench/page_speed.py (100 labels, 5,000 images, 20 finished tasks).

    .venv/bin/python bench/browser_speed.py [--home /tmp/sgcl-page-speed] [--rounds 4]

The first visit of each page is reported apart (imports, the encoder, caches); the median is over the
later rounds. Target (issue 12 item 7): < 1 s median per page.

    .venv/bin/python bench/browser_speed.py --predict [--predict-home /tmp/sgcl-predict-speed] [--images 8]

Predict as a person uses it (issue 21 item 6): a run trained on two generated classes with the default
encoder (EfficientNet-Lite0 + USE-m3, about a minute to build), then photo-sized JPEGs (1600×1200,
~600 KB) chosen one after another in the uploader; the time is from choosing the file until the
result table and the image are drawn and the run has ended. Target: < 1 s median.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

# (sidebar title, page, the page's title key) for the reviewer, who sees every page but Audit and Admin
NAV = (("ラベル", "labels", "lp.title"), ("用語集", "glossary_terms", "gp.title"), ("近傍", "neighbours", "nbr.title"),
       ("画像", "images", "ip.title"), ("学習", "train", "tr.title"), ("履歴", "history", "hi.title"),
       ("推論", "predict", "pr.title"))
# Done = the new page's title is drawn and the script run has ended (the title alone may come first).
_DRAWN_JS = """(title) => {
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  return !!h1 && h1.innerText.trim() === title && (%s)();
}"""


def build_predict_home(home: Path) -> None:
    """Two approved classes of 14 generated images each and one finished training task."""
    import random

    from core import images, jobs, labels, runs, users
    from core.auth import SYSTEM, Actor
    from core.store import Store
    from core.training import run_train_job
    from tests.test_predict_pretrained import _image

    os.environ.pop("SGCL_ENCODER", None)
    store = Store(home)
    users.create_user(store, SYSTEM, "rei", "bench pass phrase rei 9", "reviewer")
    who, rng, ids = Actor("rei", "reviewer"), random.Random(0), []
    for name, colour, stripes in (("stripes", (200, 40, 40), True), ("rings", (40, 60, 200), False)):
        label = labels.propose(store, who, name, create_entry=True)
        labels.approve(store, who, label["id"])
        images.ingest_uploads(store, who, label["id"],
                              [(f"{name}{i}.png", _image(rng, colour, stripes)) for i in range(14)])
        ids.append(label["id"])
    run = runs.create_run(store, who, "predict speed", config={"epochs": 2})
    runs.request_task(store, who, run["id"], ids)
    run_train_job(store, jobs.claim(store, "bench-worker"), worker_id="bench-worker", device="cpu")


def photo(seed: int, size=(1600, 1200)) -> bytes:
    """A camera-sized JPEG (smooth noise, so it compresses like a photo: ~600 KB)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(small).resize(size).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def predict_speed(home: Path, n_images: int) -> None:
    from core.i18n import t
    from tests.browser.harness import _IDLE_JS, CHROMIUM_ARGS, App, StreamlitServer, require_browser, stop_workers

    if not (home / "sgcl.db").exists():
        build_predict_home(home)
    folder = Path("/tmp") / "sgcl-predict-speed-images"
    folder.mkdir(exist_ok=True)
    files = []
    for i in range(n_images + 1):
        path = folder / f"photo-{i:02d}.jpg"
        path.write_bytes(photo(i))
        files.append(path)
    # Done = this upload's image is drawn next to a results table and the run has ended.
    drawn = """([name, idle]) => {
      const main = document.querySelector('[data-testid="stMain"]');
      const img = main && main.querySelector('[data-testid="stImage"] img, [data-testid="stImageContainer"] img');
      const table = main && main.querySelector('[data-testid="stDataFrame"]');
      return !!img && img.complete && img.naturalWidth > 0 && !!table
             && main.dataset.sgclSeen !== img.src && (%s)();
    }""" % _IDLE_JS
    sync_playwright, chromium = require_browser()
    log = Path("/tmp") / "sgcl-predict-speed.log"
    times = []
    with StreamlitServer(home, {"SGCL_LOG_LEVEL": "WARNING"}, log) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
        page.set_default_timeout(120_000)
        app = App(page, server.url, Path("/tmp") / "sgcl-predict-speed")
        app.open()
        app.login("rei", "bench pass phrase rei 9", user_label="ユーザー名", password_label="パスワード",
                  submit="ログイン")
        app.nav("推論").see(t("pr.title", "ja"))
        for path in files:
            page.evaluate("""() => { const main = document.querySelector('[data-testid="stMain"]');
                const img = main.querySelector('[data-testid="stImage"] img, [data-testid="stImageContainer"] img');
                main.dataset.sgclSeen = img ? img.src : ''; }""")
            started = time.perf_counter()
            page.locator('.st-key-pr_upload input[type="file"]').set_input_files(str(path))
            page.wait_for_function(drawn, arg=[path.name, True], timeout=120_000, polling=20)
            times.append(time.perf_counter() - started)
        app.shot("predict")
        browser.close()
    stop_workers(home)     # the app starts a worker for its data home; the benchmark stops it
    print(f"cores: {os.cpu_count()}   load: {os.getloadavg()[0]:.1f}   image: {files[0].stat().st_size // 1024} KB")
    print(f"predict, upload → answer: first {times[0]:.2f} s, median {statistics.median(times[1:]):.2f} s "
          f"(min {min(times[1:]):.2f}, max {max(times[1:]):.2f}) over {len(times) - 1}: "
          + " ".join(f"{x:.2f}" for x in times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default="/tmp/sgcl-page-speed", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--predict", action="store_true", help="time Predict from upload to answer instead")
    parser.add_argument("--predict-home", default="/tmp/sgcl-predict-speed", type=Path)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    if args.predict:
        predict_speed(args.predict_home, args.images)
        return
    from page_speed import build_home, keep_worker_alive

    from core.i18n import t
    from tests.browser.harness import _IDLE_JS, CHROMIUM_ARGS, App, StreamlitServer, require_browser

    drawn = _DRAWN_JS % _IDLE_JS

    if not (args.home / "sgcl.db").exists():
        build_home(args.home)
    keep_worker_alive(args.home)
    sync_playwright, chromium = require_browser()
    log = Path("/tmp") / "sgcl-browser-speed.log"
    times: dict[str, list[float]] = {}
    with StreamlitServer(args.home, {"SGCL_LOG_LEVEL": "WARNING"}, log) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="ja-JP")
        page.set_default_timeout(120_000)
        app = App(page, server.url, Path("/tmp") / "sgcl-browser-speed")
        app.open()
        app.login("rei", "bench pass phrase rei 9", user_label="ユーザー名", password_label="パスワード",
                  submit="ログイン")
        for _ in range(args.rounds + 1):
            for title, name, title_key in NAV:
                started = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
                page.wait_for_function(drawn, arg=t(title_key, "ja"), timeout=120_000, polling=20)
                times.setdefault(name, []).append(time.perf_counter() - started)
        browser.close()
    print(f"cores: {os.cpu_count()}   load: {os.getloadavg()[0]:.1f}")
    print(f"{'page':<16}{'first s':>9}{'median s':>10}   rounds")
    for name, ts in times.items():
        median = statistics.median(ts[1:])
        print(f"{name:<16}{ts[0]:9.2f}{median:10.2f}   {' '.join(f'{t:.2f}' for t in ts[1:])}"
              + ("" if median < 1.0 else "   > target"))


if __name__ == "__main__":
    main()
