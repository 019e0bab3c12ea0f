"""A model bundle read back: manifest, ONNX session, and prediction with the app's decisions.

Bundle layout (written by core/deploy/bundle.py)::

    manifest.json   format, model version, classes in output order, preprocessing, unknown threshold,
                    per-class holdout accuracy, parity check, created by/at
    model.onnx      image (B, 3, S, S) float32, normalised → scores (B, N) cosines, familiarity (B,),
                    embedding (B, D)
    labels.txt      one class name per line, in output order
    golden/…        a few images with their expected outputs (manifest["golden"])

The decisions are the app's (core/prediction.py): top-1 = argmax of the cosines; score =
softmax(logit_scale · cosines); "unknown" = familiarity below the calibrated threshold.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from core.runtime.preprocess import DEFAULT_MAX_PIXELS, BadImage, Source, decode, normalise

FORMAT = "sgcl-bundle"
FORMAT_VERSION = 1
MAX_MEMBER_BYTES = 2 << 30   # a model file larger than 2 GiB is not a bundle of ours

__all__ = ["BadBundle", "BadImage", "Bundle", "Prediction", "FORMAT", "FORMAT_VERSION"]


class BadBundle(ValueError):
    """The file is not a usable bundle (message says why)."""


@dataclass
class Prediction:
    label_id: int | None      # None when unknown
    name: str                 # the class name, or "" when unknown
    index: int                # output row of the best class (even when unknown)
    score: float              # softmax probability of the best class
    cosine: float             # its cosine
    familiarity: float
    unknown: bool
    best_name: str            # the best class's name even when unknown
    top: list = field(default_factory=list)   # [(index, probability)] best first

    def as_dict(self) -> dict:
        return {"label_id": self.label_id, "class": self.name, "best_class": self.best_name, "index": self.index,
                "score": self.score, "cosine": self.cosine, "familiarity": self.familiarity,
                "unknown": self.unknown, "top": [{"index": i, "score": p} for i, p in self.top]}


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


class Bundle:
    """An opened bundle. Thread-safe for prediction (one ONNX Runtime session, which is)."""

    def __init__(self, manifest: dict, model: bytes, path: str | None = None, providers: Sequence[str] | None = None,
                 threads: int = 0):
        import onnxruntime as ort

        self.manifest, self.path = manifest, path
        if manifest.get("format") != FORMAT or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
            raise BadBundle(f"not an {FORMAT} v{FORMAT_VERSION} bundle")
        digest = hashlib.sha256(model).hexdigest()
        if digest != manifest["model"]["sha256"]:
            raise BadBundle("model.onnx does not match the sha256 in manifest.json")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        available = ort.get_available_providers()
        wanted = [p for p in (providers or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, options, providers=wanted)
        pre = manifest["preprocessing"]
        self.size, self.mean, self.std = int(pre["size"]), pre["mean"], pre["std"]
        self.classes = manifest["classes"]
        self.logit_scale = float(manifest["logit_scale"])
        unknown = manifest.get("unknown") or {}
        self.threshold = unknown.get("threshold")
        self.version = manifest["model"]["version"]
        self._lock = threading.Lock()

    # ---- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, **kwargs) -> "Bundle":
        try:
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                if not {"manifest.json", "model.onnx"} <= names:
                    raise BadBundle("manifest.json or model.onnx missing")
                if zf.getinfo("model.onnx").file_size > MAX_MEMBER_BYTES:
                    raise BadBundle("model.onnx is too large")
                manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
                model = zf.read("model.onnx")
        except (zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError, KeyError) as exc:
            raise BadBundle(f"not a bundle zip ({type(exc).__name__})") from None
        return cls(manifest, model, str(path), **kwargs)

    def golden(self) -> list[tuple[bytes, dict]]:
        """The golden images and their expected outputs, as stored in the bundle."""
        out = []
        with zipfile.ZipFile(self.path) as zf:
            for entry in self.manifest.get("golden", []):
                out.append((zf.read(entry["file"]), entry))
        return out

    # ---- predicting ---------------------------------------------------------------------------------
    def decode(self, source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        return decode(source, self.size, max_pixels)

    def run(self, pixels: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs (scores, familiarity, embedding) for uint8 images (B, 3, S, S)."""
        outs = [], [], []
        for start in range(0, len(pixels), batch):
            x = normalise(pixels[start:start + batch], self.mean, self.std)
            for acc, arr in zip(outs, self.session.run(None, {"image": x})):
                acc.append(arr)
        if not outs[0]:
            n = len(self.classes)
            return np.zeros((0, n), np.float32), np.zeros(0, np.float32), np.zeros((0, 0), np.float32)
        return tuple(np.concatenate(o) for o in outs)  # type: ignore[return-value]

    def decide(self, scores: np.ndarray, familiarity: np.ndarray, k: int = 3) -> list[Prediction]:
        probs = _softmax(self.logit_scale * scores.astype(np.float64))
        out = []
        for row, cos, fam in zip(probs, scores, familiarity):
            best = int(np.argmax(cos))
            unknown = self.threshold is not None and float(fam) < float(self.threshold)
            cls = self.classes[best]
            order = np.argsort(-row, kind="stable")[:k]
            out.append(Prediction(None if unknown else int(cls["id"]), "" if unknown else cls["name"], best,
                                  float(row[best]), float(cos[best]), float(fam), unknown, cls["name"],
                                  [(int(i), float(row[i])) for i in order]))
        return out

    def predict(self, sources: Iterable[Source], k: int = 3) -> list[Prediction]:
        """One prediction per image (bytes or path); raises :class:`BadImage` on the first bad one."""
        pixels = [self.decode(s) for s in sources]
        if not pixels:
            return []
        scores, fam, _ = self.run(np.stack(pixels))
        return self.decide(scores, fam, k)

    def describe(self) -> dict:
        m = self.manifest
        return {"version": self.version, "run": m["model"]["run"], "task": m["model"]["task"],
                "classes": [{k: c.get(k) for k in ("id", "name", "canonical", "en", "reading")} for c in self.classes],
                "threshold": self.threshold, "input_size": self.size, "created_at": m.get("created_at"),
                "path": self.path}
