"""The deployment runtime: reads a model bundle (a zip from ``python -m core.cli export-model``) and
classifies images with onnxruntime, numpy and Pillow only — no torch, Streamlit or database, so a
line PC installs just ``pip install onnxruntime numpy pillow`` (the ``runtime`` extra).

``Bundle.open(path).predict([bytes_or_path, ...])`` → one :class:`Prediction` per image.
``python -m core.runtime BUNDLE IMAGE...`` prints a table (or ``--csv``); folder inference and the
line watcher live in :mod:`core.runtime.folder`.
"""
from core.runtime.bundle import BadImage, BadBundle, Bundle, Prediction
from core.runtime.preprocess import decode, normalise

__all__ = ["BadImage", "BadBundle", "Bundle", "Prediction", "decode", "normalise"]
