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
REFERENCE_STATUSES = ("approved", "trained")  # what a proposal is checked against

# Near-duplicate rule (calibrated per encoder and per label set, never an absolute cosine).
# Raw cosines are biased by script and "hubness": under e5 every Japanese word sits ~0.90–0.94 from
# many Japanese labels and English words sit close to a few English hubs, so the raw top-1 cosine
# (or its z against all cosines) mostly measures the script, not duplication. We therefore score
# pairs with CSLS (Conneau et al. 2018, the standard hubness correction for cross-lingual word
# retrieval): csls(q, a) = 2·cos(q, a) − r(q) − r(a), r(x) = mean cosine of x to its K nearest
# approved labels. Reference distribution = each approved label's CSLS to its nearest *other*
# approved label (how close labels the reviewers accepted as distinct get in this space). A label
# is flagged when its best CSLS is an outlier above that: robust z = (c − median) / (1.4826·MAD)
# ≥ NEAR_DUP_Z (median/MAD so one approved near-pair does not widen the band), or when the embed
# texts are identical. Measured under e5 on 32 approved product/defect/object labels and 32
# candidates (the label set of tests/test_neighbours.py): true duplicates
# 傷/擦り傷 z=3.5, ネジ/ねじ 3.9, リンゴ/りんご 5.3; the highest unrelated one bird/elephant 1.9.
# Limitation: multilingual-e5-small does not bring バイク near オートバイ or bicycle near 自転車
# (their cosine top-1 is 自動車 / butterfly); those pairs must be caught by the glossary.
NEAR_DUP_Z = 2.5
MIN_REFERENCE = 5          # fewer approved labels cannot calibrate a distribution
IDENTICAL_COSINE = 0.9999  # same embed text (e.g. another variant of the same glossary term)
CSLS_K = 5                 # neighbourhood size for the hubness term r(x)

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
    nearest: Neighbour | None    # the approved label with the best (hubness-corrected) score
    score: float | None          # raw cosine to that label
    z: float | None              # robust z of its CSLS against the approved labels' own NN CSLS
    threshold: float = NEAR_DUP_Z
    calibrated: bool = True      # False when there are too few approved labels to calibrate
    csls: float | None = None
    reference_size: int = 0

    def message(self, lang: str) -> str:
        from core.i18n import t

        if not self.calibrated and not self.flag:
            return t("nbr.uncalibrated", lang, n=self.reference_size, min=MIN_REFERENCE)
        # The verdict names the label with the strongest duplicate signal (hubness-corrected CSLS), which
        # need not be the cosine-nearest row of a neighbour table; the no-duplicate text therefore says
        # "strongest signal", never "nearest", and gives no cosine that a table could contradict.
        key = "nbr.near_dup" if self.flag else "nbr.not_dup"
        return t(key, lang, name=self.nearest.name, score=self.score or 0.0, z=self.z or 0.0,
                 threshold=self.threshold)


def _csls_reference(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(r, nn_csls) for the approved vectors: r = each one's mean cosine to its K nearest others;
    nn_csls = each one's CSLS to its nearest other."""
    sims = ref @ ref.T
    sims.fill_diagonal_(float("-inf"))
    k = min(CSLS_K, len(ref) - 1)
    r = torch.topk(sims, k, dim=1).values.mean(dim=1)
    csls = 2 * sims - r[:, None] - r[None, :]
    return r, csls.max(dim=1).values


def near_duplicates(store: Store, encoder: Encoder, label_id: int | str) -> NearDuplicateReport:
    """Is this label (an id, or a name being typed) unusually close to an approved label, by this
    encoder's own standard? See the comment above NEAR_DUP_Z for the rule and its calibration."""
    index = label_index(store, encoder)
    vector, self_id = _query_vector(store, encoder, index, label_id)
    mask = index.status_mask(REFERENCE_STATUSES)
    if self_id is not None and self_id in index.position:
        mask[index.position[self_id]] = False
    positions = torch.nonzero(mask).flatten()
    n = len(positions)
    if n == 0:
        return NearDuplicateReport(False, None, None, None, calibrated=False, reference_size=0)
    ref = index.matrix[positions]
    cos = ref @ vector

    def _neighbour(i: int) -> Neighbour:
        label = index.labels[int(positions[i])]
        return Neighbour(int(label["id"]), label["name"], label.get("canonical") or label["name"],
                         float(cos[i]), 1, label["status"])

    best_cos = int(cos.argmax())
    if n < MIN_REFERENCE:
        identical = float(cos[best_cos]) >= IDENTICAL_COSINE
        return NearDuplicateReport(identical, _neighbour(best_cos), float(cos[best_cos]), None,
                                   calibrated=False, reference_size=n)
    r_ref, reference = _csls_reference(ref)
    r_query = torch.topk(cos, min(CSLS_K, n)).values.mean()
    csls = 2 * cos - r_query - r_ref
    best = int(csls.argmax())
    median = float(reference.median())
    mad = float((reference - median).abs().median()) * 1.4826
    z = (float(csls[best]) - median) / max(mad, 1e-6)
    if float(cos[best_cos]) >= IDENTICAL_COSINE:
        best = best_cos
    flag = z >= NEAR_DUP_Z or float(cos[best]) >= IDENTICAL_COSINE
    return NearDuplicateReport(bool(flag), _neighbour(best), float(cos[best]), float(z),
                               csls=float(csls[best]), reference_size=n)


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
