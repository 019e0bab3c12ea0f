"""The inference service: tokens (missing, unknown, revoked, wrong scope → 401/403, JSON), predictions
over HTTP equal to the runtime's (raw body and multipart batches), bad and oversize input as clear JSON
errors, the OpenAPI schema, and a reload under load: 20 concurrent clients against a real
``python -m core.serve`` on 127.0.0.1 while a new task's bundle appears — no error, no lost request."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from core.auth import Actor
from core.deploy.tokens import create_token, list_tokens, revoke_token
from core.i18n import UserError
from core.runtime import Bundle
from core.store import Store
from deploy_fixtures import ADMIN, deployed, jpeg  # noqa: F401  (fixture)
from test_worker import REPO


@pytest.fixture
def service(deployed, tmp_path):
    from fastapi.testclient import TestClient

    from core.serve import Limits, ModelHolder, create_app

    store = Store(tmp_path / "svc-home")
    holder = ModelHolder(bundle_path=deployed["bundle"])
    app = create_app(holder, store, Limits(max_request_bytes=200_000, max_pixels=1_000_000, max_batch=4))
    with TestClient(app) as client:
        yield client, store, Bundle.open(deployed["bundle"])


def _bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_required_scoped_revocable_and_admin_only(service):
    client, store, _ = service
    image = jpeg("cat", 1)
    r = client.post("/v1/predict", content=image)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_missing"
    r = client.post("/v1/predict", content=image, headers=_bearer("sgcl_nope"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"

    with pytest.raises(UserError):
        create_token(store, Actor("sora", "supervisor"), "line 1")
    row, token = create_token(store, ADMIN, "line 1")
    reader, read_token = create_token(store, ADMIN, "dashboard", scope="read")
    assert token.startswith("sgcl_") and token not in str(store.query("SELECT * FROM api_tokens"))
    assert client.post("/v1/predict", content=image, headers=_bearer(token)).status_code == 200
    r = client.post("/v1/predict", content=image, headers=_bearer(read_token))
    assert r.status_code == 403 and r.json()["error"]["code"] == "token_scope"
    assert client.get("/v1/models", headers=_bearer(read_token)).status_code == 200

    revoke_token(store, ADMIN, row["id"])
    r = client.post("/v1/predict", content=image, headers=_bearer(token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_revoked"
    assert [t["revoked_at"] is not None for t in list_tokens(store, ADMIN)] == [False, True]
    actions = [a["action"] for a in store.audit_rows("api_token")]
    assert sorted(actions) == ["token.create", "token.create", "token.revoke"]


def test_predictions_over_http_equal_the_runtime(service):
    client, store, bundle = service
    _, token = create_token(store, ADMIN, "line")
    images = [jpeg(name, 300 + i) for i, name in enumerate(["cat", "dog", "bird"])]
    expected = bundle.predict(images)
    r = client.post("/v1/predict", content=images[0], headers={**_bearer(token), "Content-Type": "image/jpeg"})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == bundle.version
    assert body["predictions"][0]["best_class"] == expected[0].best_name
    files = [("files", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    r = client.post("/v1/predict", files=files, headers=_bearer(token))
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["file"] for p in got] == ["0.jpg", "1.jpg", "2.jpg"]
    for p, e in zip(got, expected):
        assert (p["best_class"], p["unknown"]) == (e.best_name, e.unknown)
        assert p["score"] == pytest.approx(e.score, abs=1e-6)
    # what the line saw is recorded: 4 images, by model version, class and decision
    from core.deploy.predictions import line_summary

    summary = line_summary(store, ADMIN, bundle.manifest["model"]["run"])
    assert summary["total"] == 4 and summary["sources"] == {"service": 4} and summary["versions"] == [bundle.version]
    assert summary["unknown"] == sum(e.unknown for e in [expected[0], *expected])
    known = [e.name for e in [expected[0], *expected] if not e.unknown]
    assert {r["name"]: r["n"] for r in summary["per_class"]} == {n: known.count(n) for n in set(known)}
    models = client.get("/v1/models", headers=_bearer(token)).json()["models"][0]
    assert [c["name"] for c in models["classes"]] == ["cat", "dog", "bird"]
    assert client.get("/health").json()["model"] == bundle.version
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/models", "/health"} <= set(schema["paths"])


def test_bad_and_oversize_requests_are_clear_json_errors(service):
    client, store, _ = service
    _, token = create_token(store, ADMIN, "line")
    h = _bearer(token)

    def err(r, status, code):
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]

    err(client.post("/v1/predict", content=b"", headers=h), 400, "no_image")
    err(client.post("/v1/predict", content=b"hello, not an image", headers=h), 422, "bad_image")
    good = jpeg("cat", 2)
    files = [("files", ("a.jpg", good, "image/jpeg")), ("files", ("b.jpg", b"garbage", "image/jpeg"))]
    r = client.post("/v1/predict", files=files, headers=h)
    err(r, 422, "bad_image")
    assert r.json()["error"]["index"] == 1 and "b.jpg" in r.json()["error"]["message"]
    err(client.post("/v1/predict", content=b"\0" * 300_000, headers=h), 413, "request_too_large")
    files = [("files", (f"{i}.jpg", good, "image/jpeg")) for i in range(5)]
    err(client.post("/v1/predict", files=files, headers=h), 413, "batch_too_large")
    big = io.BytesIO()
    Image.new("L", (1500, 1000)).save(big, "PNG")              # 1.5 MP, small file
    r = client.post("/v1/predict", content=big.getvalue(), headers=h)
    err(r, 422, "bad_image")
    assert "too many pixels" in r.json()["error"]["message"]
    err(client.get("/v1/nothing", headers=h), 404, "http_error")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_reload_under_load_drops_no_request(deployed, tmp_path):
    import httpx

    home = tmp_path / "svc-home"
    store = Store(home)
    _, token = create_token(store, ADMIN, "line")
    run = deployed["run"]
    folder = home / "bundles" / str(run)
    folder.mkdir(parents=True)
    shutil.copy(deployed["first"], folder / "0.zip")
    old, new = Bundle.open(deployed["first"]).version, Bundle.open(deployed["bundle"]).version
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "core.serve", "--run", str(run), "--home", str(home),
                             "--port", str(port), "--poll", "0.2"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    results: list = []
    lock = threading.Lock()
    image = jpeg("dog", 42)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["model"] == old:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.2)

        def client_loop():
            with httpx.Client(timeout=30) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/v1/predict", content=image, headers=_bearer(token))
                        item = (r.status_code, r.json().get("model"))
                    except Exception as exc:  # noqa: BLE001 - a dropped connection is a failure to report
                        item = ("exception", repr(exc))
                    with lock:
                        results.append(item)

        threads = [threading.Thread(target=client_loop) for _ in range(20)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        shutil.copy(deployed["bundle"], folder / ".1.zip.tmp")
        os.replace(folder / ".1.zip.tmp", folder / "1.zip")        # as the worker writes it
        deadline = time.monotonic() + 30
        while not any(m == new for _, m in list(results)):
            assert time.monotonic() < deadline, "no reload seen"
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads if "threads" in locals() else []:
            t.join(timeout=60)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    bad = [r for r in results if r[0] != 200]
    assert not bad, bad[:5]
    models = [m for _, m in results]
    assert set(models) == {old, new}
    first_new = models.index(new)
    assert len(results) > 40 and models[first_new:].count(old) <= 20   # only requests already in flight
