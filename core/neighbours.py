"""Semantic neighbours of labels, for reviewers: which existing labels a label sits closest to in the
active encoder's multilingual text space (Japanese and English labels share one space).

Speed: the name embeddings of all labels live in one in-memory matrix per (data home, encoder
version), rebuilt only when the label set or the glossary changes (its *revision*). A query is one
matrix-vector product and a top-k, so 10,000 labels answer in a few milliseconds.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from core.embeddings import embed_texts, label_embed_text
from core.encoders import Encoder, active_encoder_spec, load_encoder, spec_has_random_weights
from core.i18n import UserError
from core.labels import get_label, list_labels
from core.store import Store

DEFAULT_STATUSES = ("proposed", "approved", "trained")
REFERENCE_STATUSES = DEFAULT_STATUSES  # a label is checked against every active label, proposed ones too

# Near-duplicate rule (issue 21): an absolute cosine threshold per text encoder and script pair,
# calibrated on measured pairs (scripts/near_duplicate_calibration.py): known duplicates are the
# different words one starter-glossary entry lists (傷 / scratch, 亀裂 / ひび割れ, 異物 / コンタミ),
# unrelated pairs the terms of two different entries (7,812 pairs, every script combination). The
# threshold is the cosine that at most 0.5 % of the unrelated pairs reach. It replaces a robust z of
# a hubness-corrected score against the approved labels alone: with a handful of labels that z was
# noise (it flagged 亀裂 "crack" as a duplicate of 擦り傷 "scuff", z = 3.0) and it was silent while
# six labels were proposed together (none was approved yet). Measured (ja / en / ja–en):
#   use-m3  0.6601 / 0.6689 / 0.6240 — catches 43 % / 41 % / 52 % of the known duplicates
#   e5      0.9448 / 0.9254 / 0.8808 — catches 40 % / 43 % / 25 %
# An encoder without a calibration (CLIP towers, the test model) flags identical embed texts only.
CALIBRATED_THRESHOLDS: dict[str, dict[str, float]] = {
    "use-m3": {"ja": 0.6601, "en": 0.6689, "ja-en": 0.6240},
    "e5": {"ja": 0.9448, "en": 0.9254, "ja-en": 0.8808},
}
FALSE_ALARM_RATE = 0.005
IDENTICAL_COSINE = 0.9999  # same embed text (e.g. another variant of the same glossary term)


def calibration_for(encoder: Encoder) -> tuple[str, dict[str, float]] | None:
    """(text tower, thresholds) when this encoder's text tower was calibrated, else None."""
    version = str(getattr(encoder, "text_version", "") or getattr(encoder, "version", ""))
    if version.startswith("use-m3:"):
        return "use-m3", CALIBRATED_THRESHOLDS["use-m3"]
    if version.startswith("e5:") and version.endswith(":passage"):
        return "e5", CALIBRATED_THRESHOLDS["e5"]
    return None


def script_pair(a: str, b: str) -> str:
    """"ja", "en" or "ja-en": which of the calibrated thresholds compares ``a`` and ``b``."""
    sa, sb = ("en" if a.isascii() else "ja"), ("en" if b.isascii() else "ja")
    return sa if sa == sb else "ja-en"


# ---- the in-memory label index ----------------------------------------------------------------------

@dataclass
class LabelIndex:
    version: str
    revision: tuple
    labels: list[dict]
    matrix: torch.Tensor                 # (n, dim) L2-normalised name embeddings, row i = labels[i]
    position: dict[int, int] = field(default_factory=dict)
    statuses: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def status_mask(self, statuses: Iterable[str] | None) -> torch.Tensor:
        if statuses is None:
            return torch.ones(len(self.labels), dtype=torch.bool)
        return torch.from_numpy(np.isin(self.statuses, list(statuses)))


_INDEXES: dict[tuple[str, str], LabelIndex] = {}
_INDEX_LOCK = threading.Lock()


def label_set_revision(store: Store) -> tuple:
    """Changes whenever a label or glossary entry is added, edited (version bump) or removed."""
    row = store.query_one(
        "SELECT (SELECT COUNT(*) FROM labels) AS n, (SELECT MAX(id) FROM labels) AS max_id, "
        "(SELECT TOTAL(version) FROM labels) AS versions, "
        "(SELECT COUNT(*) FROM glossary_entries) AS entries, "
        "(SELECT TOTAL(version) FROM glossary_entries) AS entry_versions, "
        "(SELECT value FROM settings WHERE key = 'glossary_revision') AS glossary_revision")
    return tuple(row.values())


def label_index(store: Store, encoder: Encoder, progress: Callable[[float], None] | None = None) -> LabelIndex:
    """The name-embedding matrix of every label that is not merged, cached until the label set changes."""
    key = (str(store.path), encoder.version)
    revision = label_set_revision(store)
    with _INDEX_LOCK:
        hit = _INDEXES.get(key)
    if hit is not None and hit.revision == revision:
        if progress is not None:
            progress(1.0)
        return hit
    labels = [l for l in list_labels(store) if l["status"] != "merged"]
    matrix = embed_texts(store, encoder, [label_embed_text(l) for l in labels], "name", progress)
    index = LabelIndex(encoder.version, revision, labels, matrix.contiguous(),
                       {int(l["id"]): i for i, l in enumerate(labels)},
                       np.array([l["status"] for l in labels], dtype=object))
    with _INDEX_LOCK:
        _INDEXES[key] = index
    return index


# ---- neighbours ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Neighbour:
    label_id: int
    name: str
    canonical: str
    score: float   # cosine similarity of the name embeddings
    rank: int      # 1 = nearest
    status: str = ""


def _query_vector(store: Store, encoder: Encoder, index: LabelIndex, query: int | str,
                  resolve_glossary: bool = True) -> tuple[torch.Tensor, int | None]:
    if isinstance(query, (int, np.integer)) and not isinstance(query, bool):
        label_id = int(query)
        pos = index.position.get(label_id)
        if pos is not None:
            return index.matrix[pos], label_id
        label = get_label(store, label_id)  # e.g. a merged label: embed it on the fly
        return embed_texts(store, encoder, [label_embed_text(label)], "name")[0], label_id
    text = str(query or "").strip()
    if not text:
        raise UserError("nbr.empty_query")
    if resolve_glossary:
        text = query_embed_text(store, text)
    return embed_texts(store, encoder, [text], "name")[0], None


def query_embed_text(store: Store, text: str) -> str:
    """Free text is embedded the way a label would be: a spelling variant the glossary resolves
    automatically (へこみ → 凹み) is replaced by its entry's text, never embedded raw."""
    from core.glossary_store import load_glossary

    glossary = load_glossary(store)
    hit = glossary.lookup(text)
    if hit.auto and hit.entry_id:
        return glossary.get(hit.entry_id).text_to_embed
    return text


def neighbours(store: Store, encoder: Encoder, query: int | str, k: int = 10,
               statuses: Iterable[str] | None = DEFAULT_STATUSES, resolve_glossary: bool = True) -> list[Neighbour]:
    """The ``k`` labels (of the given statuses) nearest to a label id or a free text, nearest
    first, never including the queried label itself. Free text goes through the glossary first
    (``resolve_glossary``), as a proposed label would."""
    index = label_index(store, encoder)
    vector, self_id = _query_vector(store, encoder, index, query, resolve_glossary)
    if not index.labels or k <= 0:
        return []
    scores = index.matrix @ vector
    mask = index.status_mask(statuses)
    if self_id is not None and self_id in index.position:
        mask[index.position[self_id]] = False
    scores = scores.masked_fill(~mask, float("-inf"))
    top = torch.topk(scores, min(k, int(mask.sum())))
    out = []
    for rank, (score, pos) in enumerate(zip(top.values.tolist(), top.indices.tolist()), start=1):
        label = index.labels[pos]
        out.append(Neighbour(int(label["id"]), label["name"], label.get("canonical") or label["name"],
                             float(score), rank, label["status"]))
    return out


# ---- near duplicates ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NearDuplicateReport:
    flag: bool
    nearest: Neighbour | None    # the active label closest to the threshold (or over it by most)
    score: float | None          # its cosine
    threshold: float | None      # the calibrated threshold for this script pair (None: uncalibrated)
    calibrated: bool = True
    encoder: str = ""            # the calibrated text tower ("use-m3", "e5"), or the encoder's version

    def message(self, lang: str) -> str:
        from core.i18n import t

        status = t(f"status.{self.nearest.status}", lang) if self.nearest else ""
        if not self.calibrated:
            if self.flag:
                return t("nbr.identical", lang, name=self.nearest.name, status=status)
            return t("nbr.uncalibrated", lang, encoder=self.encoder)
        key = "nbr.near_dup" if self.flag else "nbr.not_dup"
        return t(key, lang, name=self.nearest.name, status=status, score=self.score or 0.0,
                 threshold=self.threshold or 0.0, rate=f"{FALSE_ALARM_RATE:.1%}")


def near_duplicates(store: Store, encoder: Encoder, label_id: int | str) -> NearDuplicateReport:
    """Is this label (an id, or a name being typed) as close to an active label (proposed, approved or
    trained) as known duplicates are, by this encoder's calibrated threshold? See CALIBRATED_THRESHOLDS."""
    index = label_index(store, encoder)
    vector, self_id = _query_vector(store, encoder, index, label_id)
    mask = index.status_mask(REFERENCE_STATUSES)
    if self_id is not None and self_id in index.position:
        mask[index.position[self_id]] = False
    positions = torch.nonzero(mask).flatten().tolist()
    calibration = calibration_for(encoder)
    tower = calibration[0] if calibration else str(getattr(encoder, "text_version", encoder.version))
    if not positions:
        return NearDuplicateReport(False, None, None, None, calibrated=calibration is not None, encoder=tower)
    cos = (index.matrix[positions] @ vector).tolist()
    if self_id is not None:
        me = get_label(store, self_id)
        my_text = label_embed_text(me)
    else:
        my_text = query_embed_text(store, str(label_id))

    def _neighbour(i: int) -> Neighbour:
        label = index.labels[positions[i]]
        return Neighbour(int(label["id"]), label["name"], label.get("canonical") or label["name"], cos[i], 1,
                         label["status"])

    best_cos = max(range(len(cos)), key=cos.__getitem__)
    if cos[best_cos] >= IDENTICAL_COSINE or calibration is None:
        return NearDuplicateReport(cos[best_cos] >= IDENTICAL_COSINE, _neighbour(best_cos), cos[best_cos], None,
                                   calibrated=calibration is not None, encoder=tower)
    thresholds = calibration[1]
    limits = [thresholds[script_pair(my_text, label_embed_text(index.labels[p]))] for p in positions]
    best = max(range(len(cos)), key=lambda i: cos[i] - limits[i])
    return NearDuplicateReport(cos[best] >= limits[best], _neighbour(best), cos[best], limits[best],
                               encoder=tower)


# ---- similarity matrix --------------------------------------------------------------------------

def similarity_matrix(store: Store, encoder: Encoder, label_ids: Sequence[int],
                      progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, list[int]]:
    """Cosine matrix of the given labels, rows/columns reordered so clusters sit together
    (average-linkage hierarchical clustering on cosine distance). Returns (matrix, ordered ids)."""
    index = label_index(store, encoder, progress)
    ids = [int(i) for i in label_ids if int(i) in index.position]
    if not ids:
        return np.zeros((0, 0), dtype=np.float32), []
    vectors = index.matrix[[index.position[i] for i in ids]]
    sims = (vectors @ vectors.T).clamp(-1, 1).numpy()
    order = _cluster_order(sims)
    return sims[np.ix_(order, order)], [ids[i] for i in order]


def _cluster_order(sims: np.ndarray) -> list[int]:
    n = len(sims)
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - sims, 0.0, 2.0).astype(np.float64)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2  # exact symmetry for squareform
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]


# ---- preview for other pages ----------------------------------------------------------------------

@dataclass(frozen=True)
class NeighbourPreview:
    encoder_spec: str
    random_weights: bool
    neighbours: list[Neighbour]
    near_duplicate: NearDuplicateReport | None

    def rows(self) -> list[dict]:
        """Table rows for ``st.dataframe``."""
        return [{"rank": n.rank, "label": n.name, "canonical": n.canonical, "status": n.status,
                 "similarity": round(n.score, 4), "id": n.label_id} for n in self.neighbours]


def neighbour_preview(store: Store, label_or_text: int | str, k: int = 5,
                      encoder: Encoder | None = None) -> NeighbourPreview:
    """What a reviewer sees next to a label before approving it: its k nearest labels and the
    near-duplicate verdict, with the active encoder (loaded once per process). Raises UserError
    when the encoder cannot be loaded or the query is empty."""
    spec = encoder.name if encoder is not None else active_encoder_spec(store)
    encoder = encoder or load_encoder(spec, store.home)
    return NeighbourPreview(spec, encoder.random_weights if encoder else spec_has_random_weights(spec),
                            neighbours(store, encoder, label_or_text, k=k),
                            near_duplicates(store, encoder, label_or_text))
