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
