"""Page times as a person waits for them: a real browser (Debian's chromium + Playwright, as in the
browser tests) clicks each sidebar link of `streamlit run app.py` and waits until the page has finished
drawing, on the data home of bench/page_speed.py (100 labels, 5,000 images, 20 finished tasks).

    .venv/bin/python bench/browser_speed.py [--home /tmp/sgcl-page-speed] [--rounds 4]

The first visit of each page is reported apart (imports, the encoder, caches); the median is over the
later rounds. Target (issue 12 item 7): < 1 s median per page.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default="/tmp/sgcl-page-speed", type=Path)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
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
