"""Throughput of the default backbone's frozen prefix on this machine, for every engine side by side in
ONE run (each measurement in its own process, engines alternating round by round, so a busy machine
affects all alike), with the ratio to plain fp32 (float32, NCHW, torch's defaults):

* ``fp32-plain``   torch fp32, NCHW (no channels-last)
* ``fp32``         torch fp32, channels-last (the reference engine of the feature cache)
* ``bf16``         torch autocast bfloat16 (oneDNN; CPUs with AVX512-BF16/AMX only)
* ``int8``         ONNX Runtime, statically quantised (CPUs with VNNI only)
* ``fp32-glibc``   fp32 without core.perf.tune_allocator() (only when named in --engines)

Two numbers per engine: from decoded tensors (the prefix alone, batch --batch) and end to end (JPEG
files → PIL decode + resize in 2 threads → prefix → float16 entries written by PrefixFeatureCache).

    .venv/bin/python bench/prefix_speed.py [--size 224] [--batch 64] [--rounds 3] [--images DIR] [--n 192]
        [--engines fp32-plain,fp32,bf16,int8] [--threads 2]

``--images``: a folder of photos for the end-to-end number (default: ../shared/datasets/caltech101/test;
without it, generated JPEGs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = ("fp32-plain", "fp32", "bf16", "int8")
EXTRA = ("fp32-glibc",)   # fp32 with glibc's default allocator settings (core/perf.py), on request


def _images(folder: str | None, n: int, out: Path) -> list[str]:
    if folder and Path(folder).is_dir():
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if files:
            step = max(1, len(files) // n)
            return [str(p) for p in files[::step][:n]]
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
        path = out / f"img{i}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        paths.append(str(path))
    return paths


def child(engine: str, size: int, batch: int, threads: int, files: list[str]) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from core.perf import tune_allocator

    if engine == "fp32-glibc":
        engine = "fp32"
    else:
        tune_allocator()
    torch.set_num_threads(threads)
    from core.encoders import DEFAULT_SPEC, load_encoder
    from core.sg.features import PrefixFeatureCache
    from core.sg.prefix_engine import PrefixRunner, supported

    encoder = load_encoder(DEFAULT_SPEC)
    model = encoder.build_image_model(input_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    if engine == "fp32-plain":
        def run(t):
            return model.prefix_net(t.contiguous())
        cache_engine = "fp32"
    else:
        if not supported(engine, model):
            return {"skipped": "not supported on this CPU"}
        runner = PrefixRunner(model, engine, encoder.image_version)
        run, cache_engine = runner, engine
    rates = []
    with torch.inference_mode():
        run(x[:8])
        run(x)
        for _ in range(3):
            started = time.perf_counter()
            run(x)
            rates.append(batch / (time.perf_counter() - started))
    result = {"tensor": statistics.median(rates)}
    if files and engine != "fp32-plain":
        with tempfile.TemporaryDirectory() as tmp:
            cache = PrefixFeatureCache(tmp, model, encoder.image_version, engine=cache_engine, decode_workers=2,
                                       batch_size=batch)
            cache.runner  # built before the clock starts
            started = time.perf_counter()
            written = cache.compute([(f"img{i:08d}", f) for i, f in enumerate(files)])
            result["end_to_end"] = written / (time.perf_counter() - started)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=192, help="images for the end-to-end number (0: skip it)")
    ap.add_argument("--images", default=str(REPO.parent / "shared" / "datasets" / "caltech101" / "test"))
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--child")
    ap.add_argument("--files")
    args = ap.parse_args()
    if args.child:
        files = json.loads(Path(args.files).read_text()) if args.files else []
        print(json.dumps(child(args.child, args.size, args.batch, args.threads, files)))
        return 0
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES) - set(EXTRA)
    if unknown:
        ap.error(f"unknown engines: {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, list[float]]] = {e: {} for e in engines}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = _images(args.images, args.n, Path(tmp)) if args.n else []
        listing = Path(tmp) / "files.json"
        listing.write_text(json.dumps(files))
        for _ in range(args.rounds):
            for engine in engines:
                out = subprocess.run([sys.executable, __file__, "--child", engine, "--size", str(args.size),
                                      "--batch", str(args.batch), "--threads", str(args.threads),
                                      "--files", str(listing)], capture_output=True, text=True, check=True)
                got = json.loads(out.stdout.strip().splitlines()[-1])
                if "skipped" in got:
                    skipped[engine] = got["skipped"]
                    continue
                for k, v in got.items():
                    results[engine].setdefault(k, []).append(v)
    print(f"prefix of the default backbone, {args.size} px, batch {args.batch}, {args.threads} threads, "
          f"median of {args.rounds} rounds; end to end over {len(files)} images")
    base = statistics.median(results["fp32-plain"]["tensor"]) if results.get("fp32-plain") else None
    print(f"{'engine':11} {'tensors img/s':>14} {'× plain fp32':>13} {'end to end img/s':>17}")
    for engine in engines:
        if engine in skipped:
            print(f"{engine:11} skipped: {skipped[engine]}")
            continue
        t = statistics.median(results[engine]["tensor"])
        ratio = f"{t / base:.2f}" if base else "-"
        e2e = results[engine].get("end_to_end")
        e2e_text = f"{statistics.median(e2e):.1f}" if e2e else "-"
        print(f"{engine:11} {t:14.1f} {ratio:>13} {e2e_text:>17}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
