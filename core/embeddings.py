"""Text-embedding cache in SQLite, and what text each label is embedded as.

Rows of ``embeddings(encoder, text, dim, vector)`` are keyed by the encoder's *text_version* (so changing
the encoder never mixes spaces) and by ``"<kind>:<text>"`` (kind ``name`` = bare label name u,
``prompt`` = templated prompt w; the same string embeds differently in the two roles for some
encoders, and a template change must not reuse name vectors).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from core import settings
from core.auth import Actor
from core.encoders import Encoder, normalize_text
from core.store import Store

KINDS = ("name", "prompt")
BATCH = 64
DEFAULT_PROMPT_TEMPLATES = settings.DEFAULT_PROMPT_TEMPLATES   # declared with the setting

@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0


STATS = CacheStats()  # process-wide counters (tests and the bench read them)


def reset_stats() -> None:
    STATS.hits = STATS.misses = 0


def _key(kind: str, text: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return f"{kind}:{text}"


def embed_texts(store: Store, encoder: Encoder, texts: Sequence[str], kind: str = "name",
                progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """L2-normalised embeddings (len(texts), dim) in input order. Cached vectors are read back;
    only the misses are encoded (in batches, reporting ``progress`` in [0, 1]) and they are written
    in one transaction."""
    texts = [normalize_text(t) for t in texts]
    unique = list(dict.fromkeys(texts))
    found = _read(store, encoder.text_version, [_key(kind, t) for t in unique])
    missing = [t for t in unique if _key(kind, t) not in found]
    STATS.hits += len(unique) - len(missing)
    STATS.misses += len(missing)
    if missing:
        encode = encoder.encode_names if kind == "name" else encoder.encode_prompts
        rows = []
        for start in range(0, len(missing), BATCH):
            batch = missing[start:start + BATCH]
            vectors = encode(batch).detach().to(torch.float32).cpu().numpy()
            for text, vec in zip(batch, vectors):
                found[_key(kind, text)] = vec
                rows.append((encoder.text_version, _key(kind, text), int(vec.shape[0]), vec.tobytes()))
            if progress is not None:
                progress(min(1.0, (start + len(batch)) / len(missing)))
        with store.transaction():
            store.conn.executemany(
                "INSERT OR REPLACE INTO embeddings (encoder, text, dim, vector) VALUES (?,?,?,?)", rows)
    elif progress is not None:
        progress(1.0)
    if not texts:
        return torch.zeros(0, encoder.dim)
    return torch.from_numpy(np.stack([found[_key(kind, t)] for t in texts]))


def _read(store: Store, version: str, keys: list[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
        chunk = keys[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for row in store.query(f"SELECT text, vector FROM embeddings WHERE encoder = ? AND text IN ({marks})",  # nosec B608  # ? placeholders only
                               (version, *chunk)):
            out[row["text"]] = np.frombuffer(row["vector"], dtype=np.float32)
    return out


def cached_count(store: Store, encoder: Encoder | None = None) -> int:
    if encoder is None:
        return store.query_one("SELECT COUNT(*) AS n FROM embeddings")["n"]
    return store.query_one("SELECT COUNT(*) AS n FROM embeddings WHERE encoder = ?", (encoder.text_version,))["n"]


# ---- what gets embedded ----------------------------------------------------------------------------

_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def text_language(text: str) -> str:
    """``ja`` when the text has kana or kanji, else ``en`` (decides the prompt template)."""
    return "ja" if _JAPANESE.search(text) else "en"


def label_embed_text(label: dict) -> str:
    """The glossary entry's embed text (or canonical) — never the raw variant the expert typed."""
    return label.get("embed_text") or label.get("canonical") or label["name"]


def prompt_templates(store: Store) -> dict[str, str]:
    """The admin's templates (declared, validated and defaulted in core/settings.py)."""
    return settings.get(store, "prompt_templates")


def set_prompt_templates(store: Store, actor: Actor, templates: dict) -> None:
    """Shorthand for the one audited write path, ``settings.update``."""
    settings.update(store, actor, {"prompt_templates": templates})


def prompt_texts(store: Store, labels: Iterable[dict]) -> list[str]:
    """One prompt per label: its embed text in the template of the text's own script."""
    templates = prompt_templates(store)
    out = []
    for label in labels:
        text = label_embed_text(label)
        out.append(templates.get(text_language(text), templates["en"]).replace("{}", text))
    return out


def label_name_embeddings(store: Store, encoder: Encoder, labels: Sequence[dict],
                          progress: Callable[[float], None] | None = None) -> torch.Tensor:
    return embed_texts(store, encoder, [label_embed_text(l) for l in labels], "name", progress)


def label_prompt_embeddings(store: Store, encoder: Encoder, labels: Sequence[dict],
                            progress: Callable[[float], None] | None = None) -> torch.Tensor:
    return embed_texts(store, encoder, prompt_texts(store, labels), "prompt", progress)
