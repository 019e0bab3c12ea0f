"""How the frozen prefix runs on a CPU: the engine that makes cached features, and what this CPU can use.

Engines (each cached under its own key, so features of two engines never mix — core/sg/features.py):

* ``fp32``  — torch, float32, channels-last (the reference; every CPU and every GPU).
* ``bf16``  — torch autocast to bfloat16 through oneDNN; only where the CPU has native bf16 dot
  products (AVX512-BF16 or AMX), where it runs ~1.4× fp32 with cosine ≥ 0.999 to it.
* ``int8``  — ONNX Runtime with the prefix statically quantised to 8 bits (per-channel weights, QDQ,
  NHWC kernels), only where the CPU has VNNI dot-product instructions (AVX512-VNNI / AVX-VNNI): without
  them ORT's u8×s8 kernels can saturate and lose accuracy, and are not faster. Only CNN prefixes
  (``prefix_net``) are exported. The quantised model is built once per backbone version and kept
  in the user's cache folder (:func:`engine_dir`), shared by every data home of the machine.

``auto`` (the default; ``SGCL_PREFIX_ENGINE`` overrides it) is ``fp32``: the exported model bundle
(core/deploy) runs the float32 prefix, and the app must answer exactly as the bundle it hands to the
line does, so the features a head is fitted on come from the same prefix. ``fast`` picks the fastest
engine this CPU and model support (int8 ≈ 5.8× plain fp32 here, see docs/results.md), for experiments
and for sites that accept that their bundles differ slightly from the app (int8 moved head accuracy
by up to 1.4 points on the shared subsets). Always ``fp32`` on a GPU. Measured side by side: ``python bench/prefix_speed.py``; accuracy against
fp32 per data set: ``python bench/prefix_accuracy.py``.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

__all__ = ["ENGINES", "cpu_flags", "supported", "choose_engine", "PrefixRunner", "INT8_RECIPE"]

ENGINES = ("fp32", "bf16", "int8")
INT8_RECIPE = "q2"     # bump when the quantisation recipe changes: it is part of the cache key
# The stem and the first blocks (prefix_net children 0–4) stay float: quantising them costs the most
# accuracy on images unlike ImageNet's (cosine to fp32 on magnetic tiles 0.965 → 0.994, on Caltech-101
# 0.993 → 0.998) for ~10 % of the speed.
FLOAT_CHILDREN = 5
_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (Linux); empty elsewhere (then only fp32 is used)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def supported(engine: str, model=None) -> bool:
    """Whether ``engine`` runs at full accuracy and speed on this CPU (and for ``model``, if given)."""
    flags = cpu_flags()
    if engine == "fp32":
        return True
    if engine == "bf16":
        return bool({"avx512_bf16", "amx_bf16"} & flags)
    if engine == "int8":
        return (bool({"avx512_vnni", "avx_vnni", "amx_int8"} & flags) and _has_onnxruntime()
                and (model is None or hasattr(model, "prefix_net")))
    raise ValueError(f"unknown prefix engine {engine!r}; choose one of {', '.join(ENGINES)} or auto")


def choose_engine(model, requested: str | None = None, device: str | torch.device = "cpu") -> str:
    """The engine to use: ``requested`` (or ``SGCL_PREFIX_ENGINE``, else ``auto`` = fp32) when this
    machine supports it, else the next best that it does (int8 → bf16 → fp32); ``fast``: the best."""
    requested = (requested or os.environ.get("SGCL_PREFIX_ENGINE") or "auto").strip().lower()
    if requested not in ENGINES + ("auto", "fast"):
        raise ValueError(f"unknown prefix engine {requested!r}; choose one of {', '.join(ENGINES)}, auto or fast")
    if torch.device(device).type != "cpu" or requested == "auto":
        return "fp32"
    order = list(reversed(ENGINES)) if requested == "fast" else list(reversed(ENGINES[:ENGINES.index(requested) + 1]))
    return next(e for e in order if supported(e, model))


def engine_dir() -> Path:
    """Where built engine files are kept: ``SGCL_ENGINE_CACHE``, else the user's cache folder. They depend
    only on the backbone weights and the recipe, so every data home of the machine shares them."""
    env = os.environ.get("SGCL_ENGINE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sgcl" / "engines"


_SESSIONS: dict[str, object] = {}


class PrefixRunner:
    """``runner(x)`` → the prefix output of a normalised float batch, computed with ``engine``. The int8
    model is built on first use (~30 s on 2 cores, once per machine) and its session shared."""

    def __init__(self, model, engine: str, version: str = "", workdir: str | os.PathLike | None = None):
        if engine not in ENGINES:
            raise ValueError(f"unknown prefix engine {engine!r}")
        self.model, self.engine = model, engine
        self._session = None
        if engine == "int8":
            import onnxruntime as ort

            name = f"{_safe(version)}-{_model_tag(model)}-int8{INT8_RECIPE}-ort{ort.__version__}.onnx"
            folder = Path(workdir) if workdir is not None else engine_dir()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                writable = os.access(folder, os.W_OK)
            except OSError:
                writable = False
            if not writable:   # a service account without a home: the temp folder instead
                import tempfile

                uid = os.getuid() if hasattr(os, "getuid") else 0
                folder = Path(tempfile.gettempdir()) / f"sgcl-engines-{uid}"
            path = folder / name
            with _LOCK:
                session = _SESSIONS.get(str(path))
            if session is None:
                session = _ort_session(_int8_model(model, path))
                with _LOCK:
                    _SESSIONS[str(path)] = session
            self._session = session

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine == "int8":
            out = self._session.run(None, {"x": x.detach().float().cpu().contiguous().numpy()})[0]
            return torch.from_numpy(out)
        if self.engine == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model.prefix(x).float()
        return self.model.prefix(x)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:60]


def _model_tag(model) -> str:
    """Input size and split of the model: which prefix network the file holds."""
    return f"s{model.input_size}-k{getattr(model, 'k', None)}"


def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def calibration_batches(size: int, mean, std, count: int = 64, batch: int = 16, seed: int = 0) -> Iterable[np.ndarray]:
    """Deterministic synthetic calibration images (normalised like the model's inputs): smooth colour
    fields, shapes with hard edges and fine texture, so every layer meets the range of values that
    photos produce. Data-free, so the quantised model is the same on every machine."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    m = np.asarray(mean, np.float32)[:, None, None]
    s = np.asarray(std, np.float32)[:, None, None]
    for start in range(0, count, batch):
        images = []
        for _ in range(min(batch, count - start)):
            # low-frequency colour field
            img = np.empty((3, size, size), np.float32)
            for c in range(3):
                a, b, ph = rng.normal(0, 3, 3)
                img[c] = 0.5 + 0.35 * np.sin(a * xx + b * yy + ph) * rng.uniform(0.3, 1)
            # shapes with edges
            for _ in range(rng.integers(3, 9)):
                cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.35)
                mask = ((xx - cx) ** 2 / rng.uniform(0.3, 1) + (yy - cy) ** 2) < r * r if rng.random() < 0.5 \
                    else (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r * rng.uniform(0.2, 1))
                img[:, mask] = rng.uniform(0, 1, (3, 1))
            # texture and noise
            freq = rng.uniform(10, 60)
            img += rng.uniform(0, 0.15) * np.sin(freq * (xx * rng.normal() + yy * rng.normal()))[None]
            img += rng.normal(0, rng.uniform(0.0, 0.08), img.shape).astype(np.float32)
            images.append(np.clip(img, 0, 1))
        yield ((np.stack(images) - m) / s).astype(np.float32)


def _int8_model(model, path: Path, calibration: Callable[[], Iterable[np.ndarray]] | None = None) -> Path:
    """The statically quantised ONNX prefix at ``path``, built (atomically) when absent."""
    with _BUILD_LOCK:
        if path.is_file():
            return path
        import tempfile

        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process

        path.parent.mkdir(parents=True, exist_ok=True)
        batches = (calibration or (lambda: calibration_batches(model.input_size, model.mean, model.std)))()

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter(batches)

            def get_next(self):
                batch = next(self.it, None)
                return None if batch is None else {"x": batch}

        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            fp32, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
            example = torch.zeros(1, 3, model.input_size, model.input_size)
            net = _static_padding(model.prefix_net.eval(), example)
            torch.onnx.export(net, (example,), str(fp32), input_names=["x"], output_names=["h"],
                              dynamic_axes={"x": {0: "batch"}, "h": {0: "batch"}}, opset_version=17, dynamo=False)
            quant_pre_process(str(fp32), str(pre))
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=_float_nodes(pre))
            os.replace(out, path)
        return path


def _float_nodes(path: Path) -> list[str]:
    """Names of the exported convolutions in ``prefix_net`` children below FLOAT_CHILDREN (the exporter
    names a node ``/<child>/…``)."""
    import onnx

    names = []
    for node in onnx.load(str(path)).graph.node:
        parts = node.name.split("/")
        if node.op_type == "Conv" and len(parts) > 1 and parts[1].isdigit() and int(parts[1]) < FLOAT_CHILDREN:
            names.append(node.name)
    return names


def _static_padding(net: torch.nn.Module, example: torch.Tensor) -> torch.nn.Module:
    """A copy of ``net`` whose TF-style "same" convolutions (timm's ``Conv2dSame``: padding worked out
    from the input size at run time) pad by the constant amounts ``example``'s size needs. Exported,
    the padding becomes part of the convolution; the dynamic form exports as a separate Pad that pads
    the *quantised* tensor with 0 instead of its zero point (features at cosine ~0.9 to fp32)."""
    import copy

    original, net = net, copy.deepcopy(net).eval()
    pads: dict[str, tuple[int, int, int, int]] = {}
    hooks = []

    def remember(name):
        def hook(module, inputs):
            ih, iw = inputs[0].shape[-2:]
            (kh, kw), (sh, sw), (dh, dw) = module.weight.shape[-2:], module.stride, module.dilation
            ph = max((-(-ih // sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
            pw = max((-(-iw // sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
            pads[name] = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        return hook

    for name, module in net.named_modules():
        if type(module).__name__ == "Conv2dSame":
            hooks.append(module.register_forward_pre_hook(remember(name)))
    with torch.no_grad():
        net(example)
    for hook in hooks:
        hook.remove()
    for name, (left, right, top, bottom) in pads.items():
        old = net.get_submodule(name)
        conv = torch.nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, old.stride, 0, old.dilation,
                               old.groups, old.bias is not None)
        conv.load_state_dict(old.state_dict())
        if left == right and top == bottom:
            conv.padding = (top, left)
            new = conv
        else:
            new = torch.nn.Sequential(torch.nn.ZeroPad2d((left, right, top, bottom)), conv)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, new)
    probe = torch.randn(example.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.allclose(net(probe), original(probe), atol=1e-4, rtol=1e-4):
            raise RuntimeError("static padding changed the prefix")
    return net
