"""End to end with the tiny encoder: labels → images (through core.images) → two tasks through the
queue and a real ``python -m core.worker`` process → History shows the 2×2 matrix → Predict answers."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, labels, runs
from core.auth import Actor
from core.sg.checkpoint import load_checkpoint
from core.store import Store
from core.prediction import predict_image
from core.training import checkpoint_path
from test_worker import REPO, REVIEWER, class_image, make_labels, worker_env
from tests.conftest import log_in_page


@pytest.mark.slow
def test_two_tasks_through_the_queue_then_history_and_predict(tmp_path, monkeypatch):
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    home = tmp_path / "home"
    store = Store(home)
    ids = make_labels(store, ["cat", "dog", "bird", "horse"])
    run = runs.create_run(store, REVIEWER, "e2e", config={"epochs": 2, "batch_size": 16})
    assert run["encoder"] == "tiny-test" and run["config"]["epochs"] == 2
    first = runs.request_task(store, REVIEWER, run["id"], [ids["cat"], ids["dog"]])
    second = runs.request_task(store, REVIEWER, run["id"], [ids["bird"], ids["horse"]])
    assert (first["task"]["idx"], second["task"]["idx"]) == (0, 1)

    proc = subprocess.run([sys.executable, "-m", "core.worker", "--home", str(home), "--exit-when-idle",
                           "--poll", "0.2"], cwd=REPO, env=worker_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for job_id in (first["job_id"], second["job_id"]):
        job = jobs.get_job(store, job_id)
        assert job["status"] == "done", (job["error"], proc.stdout[-2000:])
        assert job["progress"] == 1.0 and job["detail"]["curve"]  # the loss curve the Train page draws

    # metrics: exactly the lower triangle of a 2×2 matrix, counts per task
    summary = runs.run_summary(store, run["id"])
    assert [[not math.isnan(v) for v in row] for row in summary["acc"]] == [[True], [True, True]]
    assert summary["counts"] == [2, 2]
    assert summary["summary"]["last"] == pytest.approx(sum(summary["acc"][1]) / 2)
    assert {labels.get_label(store, i)["status"] for i in ids.values()} == {"trained"}
    # the checkpoint holds the class table in task order, exemplars by image id, and loads weights-only
    ckpt = load_checkpoint(checkpoint_path(store, run["id"], 1))
    assert ckpt["class_table"]["class_ids"] == [ids["cat"], ids["dog"], ids["bird"], ids["horse"]]
    exemplar_ids = {i for members in ckpt["learner"]["memory"]["exemplars"].values() for i in members}
    train_ids = {r["id"] for r in store.query("SELECT id FROM images WHERE split = 'train'")}
    assert exemplar_ids and exemplar_ids <= train_ids

    # History (AppTest): the 2×2 matrix as the page shows it
    at = AppTest.from_file(str(REPO / "pages" / "history.py"), default_timeout=60)
    log_in_page(at, home, Actor("sora", "supervisor"))
    at.session_state["lang"] = "en"
    at.run()
    assert not at.exception
    matrix = at.dataframe[0].value                         # the first table is the matrix
    assert matrix.shape == (2, 2)
    assert matrix.iloc[0, 1] == ""                             # above the diagonal: not evaluated
    n, right = summary["n"][1][1], summary["correct"][1][1]      # the images behind the cell, and its interval
    assert matrix.iloc[1, 1].startswith(f"{100 * summary['acc'][1][1]:.1f}% ({int(right)}/{int(n)}; 95% ") \
        or matrix.iloc[1, 1] == f"too few images ({int(right)}/{int(n)})"
    assert {m.label for m in at.metric} >= {"Average incremental accuracy", "Last accuracy"}

    # Predict: one image of a trained class → top-k over all four classes with glossary fields
    result = predict_image(store, REVIEWER, run["id"], class_image("bird", 99), k=4)
    assert result["task"] == 1
    predicted = result["predictions"]
    assert {p["label_id"] for p in predicted} == set(ids.values())
    assert sum(p["score"] for p in predicted) == pytest.approx(1.0, abs=1e-4)
    assert all({"canonical", "reading", "en"} <= set(p) for p in predicted)

    at = AppTest.from_file(str(REPO / "pages" / "predict.py"), default_timeout=60)
    log_in_page(at, home, Actor("sora", "supervisor"))
    at.run()
    at.file_uploader(key="pr_upload").upload("bird.png", class_image("bird", 99), "image/png").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert len(table) == 4
    assert table.iloc[0, 1] == predicted[0]["canonical"]
