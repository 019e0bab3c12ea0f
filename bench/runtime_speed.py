"""Runtime and service speed beside the app's PyTorch path, measured in one run (issue 18 targets on the
2-core machine: runtime single-image p50 ≤ 15 ms for a 200-px JPEG with decoding, batch ≥ 300 img/s;
service p50 ≤ 30 ms over HTTP on loopback).

    .venv/bin/python bench/runtime_speed.py [/tmp/runtime-speed-home] [--encoder SPEC] [--n 200]
        [--providers CUDAExecutionProvider,CPUExecutionProvider] [--torch-device cuda]

Builds a data home with three synthetic classes, trains one task with the active encoder (default: the
embedded EfficientNet-Lite0 + USE-m3), exports the parity-checked bundle, then times on the same 200-px
JPEGs: (1) single image, decode included — the runtime (core/runtime) vs the app's path (decode_image +
learner prefix + class scores + familiarity); (2) batches of 64, decode included; (3) POST /v1/predict
of one JPEG to ``python -m core.serve``'s app under uvicorn on 127.0.0.1. Prints a table and ratios.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from core import images, jobs, labels, runs  # noqa: E402
from core.auth import Actor  # noqa: E402

WHO = Actor("bench", "admin")
STYLES = {"red-stripes": ((200, 40, 40), True), "blue-rings": ((40, 60, 200), False), "green-dots": ((40, 190, 70), False)}


def jpeg(style, seed: int, size: int = 200) -> bytes:
    colour, vertical = style
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, float)[None, None] + rng.normal(0, 30, (size, size, 3)), 0, 255)
    bands = (np.arange(size) // 10) % 2 == 0
    if vertical:
        arr[:, bands] *= 0.5
    else:
        arr[bands] *= 0.6
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def p50_ms(fn, n: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def build(home: Path) -> tuple:
    from core.deploy.bundle import export_bundle
    from core.store import Store
    from core.training import run_train_job

    if home.exists():
        shutil.rmtree(home)
    store = Store(home)
    ids = []
    for n, (name, style) in enumerate(STYLES.items()):
        label = labels.propose(store, WHO, name, create_entry=True)
        labels.approve(store, WHO, label["id"])
        images.ingest_uploads(store, WHO, label["id"], [(f"{name}{i}.jpg", jpeg(style, 100 * n + i)) for i in range(16)])
        ids.append(label["id"])
    run = runs.create_run(store, WHO, "bench", config={"epochs": 2})
    runs.request_task(store, WHO, run["id"], ids)
    t = time.perf_counter()
    run_train_job(store, jobs.claim(store, "bench"), worker_id="bench", device="cpu")
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    path = export_bundle(store, WHO, run["id"])
    return store, run, path, train_s, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("home", nargs="?", default="/tmp/runtime-speed-home")
    ap.add_argument("--encoder", help="encoder spec (default: the active one, $SGCL_ENCODER or the setting)")
    ap.add_argument("--n", type=int, default=200, help="timed repetitions per single-image measurement")
    ap.add_argument("--providers", default="CPUExecutionProvider")
    ap.add_argument("--torch-device", default="cpu")
    args = ap.parse_args()
    if args.encoder:
        os.environ["SGCL_ENCODER"] = args.encoder
    import torch

    from core.deploy.tokens import create_token
    from core.prediction import _predictor
    from core.runtime import Bundle
    from core.sg.data import decode_image
    from core.training import checkpoint_path

    store, run, path, train_s, export_s = build(Path(args.home))
    bundle = Bundle.open(path, providers=args.providers.split(","))
    learner, encoder, table, extra = _predictor(store, run, checkpoint_path(store, run["id"], 0))
    learner.config.device = args.torch_device
    learner.device = torch.device(args.torch_device)
    learner.model.to(learner.device)
    W = table["prompt_feats"]
    size = bundle.size
    test = [jpeg(style, 5000 + i) for i in range(64) for style in STYLES.values()][:64]
    one = test[0]

    def app_single():
        x = torch.from_numpy(decode_image(one, size)).unsqueeze(0)
        h = learner.prefix_features(x)
        s = learner.class_scores(h, W)
        learner.familiarity(h, W, s)

    def rt_single():
        bundle.predict([one])

    def app_batch():
        x = torch.from_numpy(np.stack([decode_image(d, size) for d in test]))
        h = learner.prefix_features(x)
        s = learner.class_scores(h, W)
        learner.familiarity(h, W, s)

    def rt_batch():
        bundle.predict(test)

    app_p50, rt_p50 = p50_ms(app_single, args.n), p50_ms(rt_single, args.n)
    reps = max(3, args.n // 40)
    app_ips = len(test) / (p50_ms(app_batch, reps) / 1000)
    rt_ips = len(test) / (p50_ms(rt_batch, reps) / 1000)
    same = [p.index for p in bundle.predict(test)] == learner.class_scores(
        learner.prefix_features(torch.from_numpy(np.stack([decode_image(d, size) for d in test]))), W).argmax(1).tolist()

    # the service, over HTTP on loopback
    import httpx
    import uvicorn

    from core.serve import ModelHolder, create_app

    _, token = create_token(store, WHO, "bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    holder = ModelHolder(bundle_path=path)
    holder.current = bundle
    server = uvicorn.Server(uvicorn.Config(create_app(holder, store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "image/jpeg"}) as c:
            def http_one():
                r = c.post("/v1/predict", content=one)
                assert r.status_code == 200, r.text
            http_p50 = p50_ms(http_one, args.n)
    finally:
        server.should_exit = True
        thread.join(timeout=10)

    print(f"encoder {encoder.version}; {len(bundle.classes)} classes; input {size}px; torch threads "
          f"{torch.get_num_threads()}, cpu count {os.cpu_count()}; providers {bundle.session.get_providers()}; "
          f"torch device {args.torch_device}")
    print(f"train job {train_s:.1f} s, export + parity check {export_s:.1f} s "
          f"({bundle.manifest['parity']['images']} images, max |diff| {bundle.manifest['parity']['max_abs_diff']:.1e})")
    print(f"{'measure':<44}{'runtime':>12}{'app torch':>12}{'ratio':>10}")
    print(f"{'single 200-px JPEG p50 (decode incl.), ms':<44}{rt_p50:>12.2f}{app_p50:>12.2f}{app_p50 / rt_p50:>9.2f}x")
    print(f"{'batch of 64 JPEGs (decode incl.), img/s':<44}{rt_ips:>12.0f}{app_ips:>12.0f}{rt_ips / app_ips:>9.2f}x")
    print(f"{'service POST /v1/predict p50, ms':<44}{http_p50:>12.2f}")
    print(f"top-1 identical on the 64 test JPEGs: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
