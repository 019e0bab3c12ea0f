"""The bundled starter glossary: size, lint, curated guards and the measurement script."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glossary import Glossary, starter_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def g():
    return Glossary.from_csv(starter_path())


def test_starter_path_is_inside_the_package():
    p = starter_path()
    assert p.is_file() and p.parent.name == "data" and p.parent.parent.name == "glossary"


def test_size_and_shape(g):
    assert len(g) >= 45
    for e in g.entries:
        assert re.fullmatch(r"(defect|part)\.[a-z0-9_]+", e.id), e.id
        assert e.reading and re.fullmatch(r"[\u30a0-\u30ff]+", e.reading), (e.id, e.reading)
        assert e.en, e.id
        assert e.status == "approved"
    assert sum(e.id.startswith("part.") for e in g.entries) >= 12


def test_lints_clean(g):
    assert g.lint() == []


def test_distinct_from_ids_exist(g):
    ids = {e.id for e in g.entries}
    for e in g.entries:
        for d in e.distinct_from:
            assert d in ids or not d.isascii(), f"{e.id}: distinct_from {d!r} is neither an id nor a form"


def _literal_guards(g):
    return [(e, d) for e in g.entries for d in e.distinct_from if d not in g]


def test_literal_distinct_from_forms_are_real_guards(g):
    """A literal ``distinct_from`` form (寂 on 錆) must be a homophone of the entry (it reads like the
    entry's curated reading, so a reading tier could confuse them), or the guard guards nothing; with
    the guard it never resolves to the entry nor is suggested for it."""
    from glossary import analyzer, kana_key, normalize_chars

    guards = _literal_guards(g)
    assert len(guards) >= 5
    for entry, form in guards:
        reading = analyzer.reading_key(normalize_chars(form))
        assert reading == kana_key(entry.reading), f"{entry.id}: {form!r} reads {reading}, not {entry.reading}"
        guarded = g.lookup(form)
        assert guarded.entry_id != entry.id and entry.id not in {s.entry_id for s in guarded.suggestions}, form


def test_literal_distinct_from_forms_mean_something_else():
    """...and it really is another word: JMdict gives it no meaning in common with the entry
    (寂 "patina" vs 錆 "rust", 掛け "credit" vs 欠け "chip", 遺物 "relic" vs 異物 "foreign matter")."""
    from core import dictionary

    g = Glossary.from_csv(starter_path())
    for entry, form in _literal_guards(g):
        assert dictionary.words(form), f"{form!r} is not a dictionary word"
        mine = dictionary.profile(form)
        theirs = dictionary.profile(entry.canonical, "", entry.en)
        assert mine.meanings and dictionary.link(mine, theirs) is None, (entry.id, form, mine.meanings & theirs.meanings)


@pytest.mark.parametrize("text,eid", [
    ("ｷｽﾞ", "defect.scratch"), ("疵", "defect.scratch"), ("サビ", "defect.rust"), ("銹", "defect.rust"),
    ("へこみ", "defect.dent"), ("ﾊﾞﾘ", "defect.burr"), ("擦傷", "defect.scuff"), ("スリキズ", "defect.scuff"),
    ("き裂", "defect.crack"), ("キレツ", "defect.crack"), ("剝がれ", "defect.peeling"), ("ネジ", "part.screw"),
    ("ﾈｼﾞ", "part.screw"), ("ゆがみ", "defect.warp"), ("ひずみ", "defect.strain"), ("かけ", "defect.chip"),
    ("ベアリング", "part.bearing"), ("ＰＣＢ", "part.pcb"), ("rust", "defect.rust"),
])
def test_variants(g, text, eid):
    r = g.lookup(text)
    assert r.auto and r.entry_id == eid, r


@pytest.mark.parametrize("text", ["掛け", "賭け", "遺物", "我", "村", "寂", "バリア", "ショート"])
def test_must_not_match(g, text):
    assert not g.lookup(text).auto


def test_measure_script_reports_no_wrong_matches():
    out = subprocess.run([sys.executable, "scripts/measure_glossary.py", "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    totals = dict((k, int(v)) for k, v in re.findall(r"(auto-correct|suggest-correct|miss|wrong|none-ok) (\d+)",
                                                      out.stdout.split("totals:")[1].splitlines()[0]))
    assert totals["wrong"] == 0 and totals["auto-correct"] >= 40
    lean = subprocess.run([sys.executable, "scripts/measure_glossary.py", "--quiet", "--lean"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert lean.returncode == 0, lean.stdout + lean.stderr
