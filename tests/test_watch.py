"""The line watcher: the backlog and every image that arrives are classified once, a bad file is an
error row and does not stop it, and after a restart nothing is handled twice (state of processed
hashes), even an image copied in again under another name."""
from __future__ import annotations

import csv
import threading
import time

from core.runtime import Bundle
from core.runtime.folder import Watcher
from deploy_fixtures import deployed, jpeg  # noqa: F401  (fixture)


def _rows(path):
    return list(csv.DictReader(path.open(encoding="utf-8"))) if path.exists() else []


def _wait(pred, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _start(w):
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def test_watch_handles_each_image_once_across_restarts_and_survives_bad_files(deployed, tmp_path):
    bundle = Bundle.open(deployed["bundle"])
    line, out, sorted_dir = tmp_path / "line", tmp_path / "line.csv", tmp_path / "sorted"
    line.mkdir()
    (line / "backlog.jpg").write_bytes(jpeg("cat", 11))
    w = Watcher(bundle, line, out, sort_into=sorted_dir, settle_s=0.1)
    stop, t = _start(w)
    try:
        assert _wait(lambda: len(_rows(out)) == 1)
        (line / "a.jpg").write_bytes(jpeg("dog", 12))
        (line / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
        (line / "b.jpg").write_bytes(jpeg("bird", 13))
        assert _wait(lambda: len(_rows(out)) == 4), _rows(out)
    finally:
        stop.set()
        t.join(timeout=30)
    rows = {r["file"].rsplit("/", 1)[1]: r for r in _rows(out)}
    assert rows["broken.jpg"]["error"] and not rows["a.jpg"]["error"]
    assert rows["a.jpg"]["class"] == ("" if bundle.predict([jpeg("dog", 12)])[0].unknown
                                      else bundle.predict([jpeg("dog", 12)])[0].name)
    assert (sorted_dir / "_error" / "broken.jpg").exists()

    # restart: the same files (and a copy under another name) are not handled again; a new one is
    (line / "a-copy.jpg").write_bytes(jpeg("dog", 12))
    w2 = Watcher(bundle, line, out, sort_into=sorted_dir, settle_s=0.1)
    stop, t = _start(w2)
    try:
        (line / "c.jpg").write_bytes(jpeg("cat", 14))
        assert _wait(lambda: len(_rows(out)) == 5), _rows(out)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(timeout=30)
    names = [r["file"].rsplit("/", 1)[1] for r in _rows(out)]
    assert sorted(names) == ["a.jpg", "b.jpg", "backlog.jpg", "broken.jpg", "c.jpg"]
