"""Tiered lookup (spec §3.1 step 9), guards against homographs/homophones, lint, API contract."""
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from glossary import (TIERS, Collision, Glossary, GlossaryEntry, GlossaryError, LookupResult, Suggestion,
                      starter_path)

ROOT = Path(__file__).resolve().parents[1]


def E(eid, canonical, reading="", en="", aliases=(), distinct_from=(), status="approved", **kw):
    return GlossaryEntry(id=eid, canonical=canonical, reading=reading, en=en, aliases=list(aliases),
                         distinct_from=list(distinct_from), status=status, **kw)


# A lean glossary: canonicals, curated readings and English only — variants must come from the tiers.
LEAN = [
    E("defect.scratch", "傷", "キズ", "scratch"),
    E("defect.scuff", "擦り傷", "スリキズ", "scuff"),
    E("defect.impact_mark", "打痕", "ダコン", "impact mark"),
    E("defect.dent", "凹み", "ヘコミ", "dent"),
    E("defect.rust", "錆", "サビ", "rust"),
    E("defect.foreign_matter", "異物", "イブツ", "foreign matter"),
    E("defect.chip", "欠け", "カケ", "chip"),
    E("defect.breakage", "割れ", "ワレ", "breakage"),
    E("defect.crack", "亀裂", "キレツ", "crack"),
    E("defect.burr", "バリ", "バリ", "burr"),
    E("defect.unevenness", "ムラ", "ムラ", "unevenness"),
    E("defect.warp", "歪み", "ユガミ", "warp", distinct_from=["defect.strain"]),
    E("defect.strain", "ひずみ", "ヒズミ", "strain", aliases=["歪"], distinct_from=["defect.warp"]),
    E("defect.peeling", "剥がれ", "ハガレ", "peeling"),
    E("defect.dimension", "寸法不良", "スンポウフリョウ", "dimensional defect"),
    E("part.screw", "ねじ", "ネジ", "screw", aliases=["螺子"]),
    E("part.server", "サーバー", "サーバー", "server"),
    E("part.o_ring", "Oリング", "オーリング", "O-ring"),
]


@pytest.fixture(scope="module")
def lean():
    return Glossary(LEAN)


@pytest.fixture(scope="module")
def starter():
    return Glossary.from_csv(starter_path())


def auto(g, text):
    r = g.lookup(text)
    return (r.tier, r.entry_id) if r.auto else (r.tier, None)


# ---- every tier ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text,tier,eid", [
    ("錆", "exact", "defect.rust"),
    ("rust", "exact", "defect.rust"),
    # basic: width, dash/long vowel, case, spaces
    ("ｻｰﾊﾞｰ", "basic", "part.server"),
    ("サ−バ−", "basic", "part.server"),
    ("サ－バ－", "basic", "part.server"),
    ("Ｏリング", "basic", "part.o_ring"),
    ("RUST", "basic", "defect.rust"),
    ("寸法　不良", "basic", "defect.dimension"),
    ("Foreign  Matter", "basic", "defect.foreign_matter"),
    ("ﾊﾞﾘ", "basic", "defect.burr"),
    # kana: hiragana = katakana
    ("ネジ", "kana", "part.screw"),
    ("ﾈｼﾞ", "kana", "part.screw"),
    ("ヒズミ", "kana", "defect.strain"),
    # lemma|lForm: okurigana, kanji/kana, 異体字, loanword long vowel
    ("サビ", "lemma", "defect.rust"),
    ("さび", "lemma", "defect.rust"),
    ("錆び", "lemma", "defect.rust"),
    ("銹", "lemma", "defect.rust"),
    ("キズ", "lemma", "defect.scratch"),
    ("きず", "lemma", "defect.scratch"),
    ("疵", "lemma", "defect.scratch"),
    ("ｷｽﾞ", "lemma", "defect.scratch"),
    ("擦傷", "lemma", "defect.scuff"),
    ("へこみ", "lemma", "defect.dent"),
    ("き裂", "lemma", "defect.crack"),
    ("剝がれ", "lemma", "defect.peeling"),
    ("はがれ", "lemma", "defect.peeling"),
    ("サーバ", "lemma", "part.server"),
    ("ゆがみ", "lemma", "defect.warp"),
    ("O-リング", "lemma", "part.o_ring"),
    ("Scratches", "lemma", "defect.scratch"),
    ("o-rings", "lemma", "part.o_ring"),
    # reading, kana-only input: where UniDic mis-analyses kana
    ("かけ", "reading", "defect.chip"),
    ("カケ", "reading", "defect.chip"),
    ("ワレ", "reading", "defect.breakage"),
    ("われ", "reading", "defect.breakage"),
    ("いぶつ", "reading", "defect.foreign_matter"),
    ("スリキズ", "reading", "defect.scuff"),
    ("キレツ", "reading", "defect.crack"),
    ("だこん", "reading", "defect.impact_mark"),
    ("すんぽうふりょう", "reading", "defect.dimension"),
    ("むら", "kana", "defect.unevenness"),
])
def test_tiers_auto(lean, text, tier, eid):
    r = lean.lookup(text)
    assert r.auto, (text, r)
    assert (r.tier, r.entry_id, r.canonical) == (tier, eid, lean.get(eid).canonical)
    assert r.query == text and r.ambiguous == []


def test_reading_tilde_is_suggestion_only_for_mixed_input(lean):
    r = lean.lookup("剥れ")  # mixed kanji+kana; analysed differently from 剥がれ, same reading
    assert not r.auto and r.entry_id is None and r.canonical is None
    assert r.tier == "reading~"
    assert r.suggestions[0].entry_id == "defect.peeling" and r.suggestions[0].tier == "reading~"


@pytest.mark.parametrize("text,not_eid", [
    ("掛け", "defect.chip"),        # homophone of 欠け
    ("賭け", "defect.chip"),
    ("遺物", "defect.foreign_matter"),
    ("我", "defect.breakage"),
    ("寂", "defect.rust"),
    ("村", "defect.unevenness"),    # UniDic's lemma of ムラ is 村
])
def test_homophones_are_never_auto(lean, text, not_eid):
    r = lean.lookup(text)
    assert not r.auto, r
    # a suggestion at most, and then only through reading~
    assert all(s.tier == "reading~" for s in r.suggestions if s.entry_id == not_eid)


def test_kake_kanji_homograph_suggests_but_never_applies(lean):
    r = lean.lookup("掛け")
    assert (r.tier, r.auto) == ("reading~", False)
    assert [s.entry_id for s in r.suggestions][:1] == ["defect.chip"]


def test_yugami_and_hizumi_stay_distinct(lean, starter):
    for g in (lean, starter):
        assert auto(g, "ゆがみ")[1] == "defect.warp"
        assert auto(g, "ひずみ")[1] == "defect.strain"
        assert auto(g, "ヒズミ")[1] == "defect.strain"
        assert auto(g, "歪み")[1] == "defect.warp"
    # both have UniDic lemma 歪み; only the lForm half of the key tells them apart
    assert not [c for c in lean.lint() if {"defect.warp", "defect.strain"} <= set(c.entry_ids)]


def test_mura_guard_holds_without_distinct_from(lean):
    # ムラ/むら analyse as 村; the lemma key of a kana-only form is not trusted when the analyser
    # invents a kanji the entry does not contain, so 村 cannot reach ムラ through the lemma tier.
    assert not lean.lookup("村").auto
    assert auto(lean, "ムラ") == ("exact", "defect.unevenness")


def test_kana_only_lemma_hit_with_competing_reading_is_ambiguous():
    g = Glossary([E("defect.chip", "欠け", "カケ"), E("misc.bet", "賭け", "カケ")])
    r = g.lookup("カケ")  # UniDic: lemma 賭け; but 欠け reads カケ too
    assert not r.auto and r.tier == "lemma"
    assert set(r.ambiguous) == {"defect.chip", "misc.bet"}
    assert {s.entry_id for s in r.suggestions} == {"defect.chip", "misc.bet"}


def test_shared_key_is_ambiguous_never_auto():
    g = Glossary([E("a.crack", "亀裂", aliases=["クラック"]), E("a.break", "割れ", aliases=["クラック"])])
    r = g.lookup("クラック")
    assert not r.auto and r.tier == "exact" and r.ambiguous == ["a.crack", "a.break"]
    assert r.entry_id is None and r.canonical is None


def test_deprecated_is_never_auto():
    g = Glossary([E("old.rust", "錆", "サビ", status="deprecated")])
    r = g.lookup("錆")
    assert not r.auto and r.entry_id is None
    assert [s.entry_id for s in r.suggestions] == ["old.rust"]
    # an approved entry with the same key wins over the deprecated one
    g2 = g.with_entry(E("defect.rust", "錆", "サビ"))
    assert auto(g2, "錆") == ("exact", "defect.rust")
    assert g2.lint() == []  # deprecated entries do not count as collisions


def test_draft_entries_apply():
    g = Glossary([E("defect.rust", "錆", "サビ", status="draft")])
    assert auto(g, "さび")[1] == "defect.rust"


def test_distinct_from_literal_form_blocks_entry(lean):
    g = lean.with_entry(replace(lean.get("defect.chip"), distinct_from=["掛け"]))
    r = g.lookup("掛け")
    assert not r.auto and "defect.chip" not in {s.entry_id for s in r.suggestions}


# ---- containment and new terms ----------------------------------------------------------------

def test_containment_is_suggestion_only(lean):
    r = lean.lookup("ボス部の打痕")   # MeCab alone splits 打痕 into 打+痕
    assert not r.auto and r.tier == "contains"
    assert r.suggestions[0].entry_id == "defect.impact_mark"
    r = lean.lookup("ネジ部のサビ")
    assert not r.auto and {"part.screw", "defect.rust"} <= {s.entry_id for s in r.suggestions}


def test_containment_uses_glossary_user_dictionary(lean):
    g = lean.with_entry(replace(lean.get("defect.scuff"), aliases=["スリキズ"]))
    r = g.lookup("スリキズ多数")     # without the user dictionary: 掏摸 + 傷 + 多数
    assert r.tier == "contains" and r.suggestions[0].entry_id == "defect.scuff"


def test_one_character_readings_do_not_match_fragments():
    g = Glossary([E("unit.celsius", "℃", "ド", "degree celsius"), E("defect.weld_line", "ウェルドライン")])
    r = g.lookup("ウェルドラインあり")
    assert "unit.celsius" not in {s.entry_id for s in r.suggestions}


def test_new_term_gets_typo_suggestions(lean):
    r = lean.lookup("スリキス")            # a missing voicing mark: ス for ズ
    assert not r.auto and r.tier == "typo"
    assert r.suggestions and r.suggestions[0].entry_id == "defect.scuff" and r.suggestions[0].tier == "typo"
    assert 0 < r.suggestions[0].score <= 1 and "スリキズ" in r.suggestions[0].reason
    r = lean.lookup("scrach")              # one letter dropped
    assert [(s.entry_id, s.tier) for s in r.suggestions] == [("defect.scratch", "typo")]


# What new users typed and were offered nonsense for (issue 12): none of these shares a meaning with
# the starter glossary, and none may get a suggestion, let alone a pre-selected one.
@pytest.mark.parametrize("text", ["飛行機", "ひこうき", "トラック", "Cat", "ship", "キリン", "ピンク", "apple",
                                  "deer", "くるま", "椅子", "キス", "ヒゲ"])
def test_unrelated_words_get_no_suggestion(starter, text):
    r = starter.lookup(text)
    assert not r.auto and r.suggestions == [], r


def test_a_reading_inside_a_longer_word_is_not_containment(starter):
    # ひこうき analyses as ひこう+き: the reading うき of 浮き sits across a word boundary
    assert "defect.lifting" not in {s.entry_id for s in starter.lookup("ひこうき").suggestions}
    assert "defect.lifting" not in {s.entry_id for s in starter.lookup("ひこうき雲").suggestions}
    # but a whole word still counts: うき+不良
    assert "defect.lifting" in {s.entry_id for s in starter.lookup("うき不良").suggestions}


def test_containment_fallback_respects_word_boundaries(monkeypatch):
    from glossary import analyzer

    monkeypatch.setattr(analyzer, "UserDictionary", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("x")))
    g = Glossary([E("defect.lifting", "浮き", "ウキ", aliases=["うき"]), E("x.other", "別の用語試験")])
    assert g.lookup("ひこうき").suggestions == []
    assert [s.entry_id for s in g.lookup("うき不良").suggestions] == ["defect.lifting"]


def test_typo_rules():
    from glossary.typo import english_typo_edits, kana_fold, kana_typo_edits

    assert kana_fold("スリキズ") == kana_fold("スリキス") and kana_fold("ガスケット") == "カスケツト"
    assert kana_typo_edits("スリキス", "スリキズ") == 1
    assert kana_typo_edits("ワッシャ", "ワッシャー") == 1
    assert kana_typo_edits("キス", "キズ") is None              # 2 kana: a real word (kiss)
    assert kana_typo_edits("トラック", "クラック") is None      # ト/ク is not a typo-like edit
    assert kana_typo_edits("ピンク", "ピン") is None
    assert english_typo_edits("scrach", "scratch") == 1
    assert english_typo_edits("crakc", "crack") == 1           # swapped neighbours = one edit
    assert english_typo_edits("ship", "chip") is None          # other first letter, short
    assert english_typo_edits("cat", "cavity") is None
    assert english_typo_edits("boat", "bolt") is None          # 4 letters: too many real words


def test_measured_probe_list_gets_almost_no_suggestions():
    out = subprocess.run([sys.executable, "scripts/measure_glossary.py", "--quiet"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    import re

    words, hits = map(int, re.search(r"unrelated words: (\d+), with a suggestion (\d+)", out.stdout).groups())
    assert words >= 60 and hits <= 2, out.stdout
    # what is left is labelled a typo, never a plain "similar" suggestion
    assert "unrelated words" in out.stdout and all(
        "typo:" in line for line in out.stdout.split("with a suggestion")[1].splitlines()[1:]
        if line.startswith("  ") and not line.startswith("  typo") and ":" in line and "typos" not in line)


def test_unrelated_text_has_no_match(lean):
    r = lean.lookup("取扱説明書")
    assert (r.tier, r.auto, r.entry_id) == ("none", False, None)
    assert lean.lookup("").tier == "none" and lean.lookup("   ").suggestions == []


def test_result_types(lean):
    r = lean.lookup("掛け")
    assert isinstance(r, LookupResult) and r.tier in TIERS
    assert all(isinstance(s, Suggestion) and s.tier in TIERS and s.reason for s in r.suggestions)
    assert r.normalized == "掛け"


# ---- lint ---------------------------------------------------------------------------------------

def test_lint_finds_planted_collision_and_respects_distinct_from():
    a = E("defect.chip", "欠け", "カケ", "chip")
    b = E("defect.chip2", "かけ", "カケ", "chipped")   # planted: same reading and kana key as 欠け
    cols = Glossary([a, b]).lint()
    assert cols and all(isinstance(c, Collision) for c in cols)
    assert any(c.tier == "reading" and c.key == "カケ" and c.entry_ids == ["defect.chip", "defect.chip2"]
               for c in cols)
    c = next(c for c in cols if c.tier == "reading")
    assert set(c.forms) == {"defect.chip", "defect.chip2"} and "かけ" in c.forms["defect.chip2"]
    # declaring the pair distinct silences the lint (either side may declare it)
    assert Glossary([replace(a, distinct_from=["defect.chip2"]), b]).lint() == []
    assert Glossary([a, replace(b, distinct_from=["defect.chip"])]).lint() == []


def test_lint_reports_a_shared_alias_once():
    g = Glossary([E("a.x", "亀裂", aliases=["クラック"]), E("a.y", "割れ", aliases=["クラック"])])
    cols = g.lint()
    assert [(c.tier, c.key) for c in cols] == [("exact", "クラック")]


def test_lint_of_lemma_tier():
    g = Glossary([E("a.x", "錆"), E("a.y", "銹")])   # different strings, same UniDic lemma
    assert [(c.tier, c.entry_ids) for c in g.lint()] == [("lemma", ["a.x", "a.y"])]


# ---- API contract -------------------------------------------------------------------------------

def test_entry_defaults_and_text_to_embed():
    e = GlossaryEntry(id="defect.rust", canonical="錆")
    assert (e.reading, e.en, e.embed_text, e.aliases, e.distinct_from, e.notes, e.status) == (
        "", "", "", [], [], "", "approved")
    assert e.text_to_embed == "錆"
    assert replace(e, embed_text="錆（さび）").text_to_embed == "錆（さび）"


def test_glossary_container_and_copy_on_write(lean):
    assert len(lean) == len(LEAN) and [e.id for e in lean.entries] == [e.id for e in LEAN]
    assert lean.get("defect.rust").canonical == "錆" and lean.get("nope") is None
    g2 = lean.with_entry(replace(lean.get("defect.rust"), aliases=["赤錆"]))
    assert auto(g2, "赤錆") == ("exact", "defect.rust") and not lean.lookup("赤錆").auto
    assert [e.id for e in g2.entries] == [e.id for e in lean.entries]          # replaced in place
    g3 = g2.with_entry(E("defect.new", "新規"))
    assert len(g3) == len(lean) + 1 and g3.entries[-1].id == "defect.new"
    assert "defect.rust" not in g3.without_entry("defect.rust")


def test_mutating_the_callers_entry_does_not_desync_the_index():
    e = E("defect.rust", "錆", aliases=["さび"])
    g = Glossary([e])
    e.aliases.append("赤錆")
    assert not g.lookup("赤錆").auto and g.get("defect.rust").aliases == ["さび"]


@pytest.mark.parametrize("entries,field,code", [
    ([E("a", "甲"), E("a", "乙")], "id", "duplicate_id"),
    ([E("", "甲")], "id", "empty"),
    ([E("a", " ")], "canonical", "empty"),
    ([E("a", "甲", status="retired")], "status", "bad_status"),
    ([E("a", "甲", aliases=["x|y"])], "aliases", "bad_char"),
])
def test_invalid_entries_raise_glossary_error(entries, field, code):
    with pytest.raises(GlossaryError) as err:
        Glossary(entries)
    assert (err.value.field, err.value.code) == (field, code)


def two_hundred_entries() -> list[GlossaryEntry]:
    """The starter glossary four times over with prefixed terms (外観錆, 内部錆, …), cut to 200 entries
    (bench/glossary_speed.py times the build of the same list: speeds are not asserted here)."""
    base = Glossary.from_csv(starter_path()).entries
    entries = [replace(e, id=f"{e.id}.{i}", canonical=p + e.canonical, aliases=[p + a for a in e.aliases],
                       distinct_from=[])
               for i, p in enumerate(["", "外観", "内部", "端部"]) for e in base][:200]
    assert len(entries) == 200
    return entries


def test_a_glossary_of_200_entries_builds_and_resolves_each_canonical_term():
    entries = two_hundred_entries()
    glossary = Glossary(entries)
    assert len(glossary) == 200
    for entry in entries:
        hit = glossary.lookup(entry.canonical)
        assert (hit.tier, hit.entry_id) == ("exact", entry.id), entry.canonical


def test_lookup_is_thread_safe(starter):
    queries = ["ｷｽﾞ", "ボス部の打痕", "かけ", "掛け", "スリキズ多数", "ネジ部のサビ", "剝がれ", "Scratches"] * 5
    expected = [starter.lookup(q) for q in queries]
    fresh = Glossary(starter.entries)     # its user dictionary is built concurrently below
    results: list = [None] * len(queries)

    def work(i):
        results[i] = fresh.lookup(queries[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(queries))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_unidic_lite_dicdir_is_explicit():
    import unidic_lite

    from glossary import analyzer
    assert unidic_lite.DICDIR in analyzer._tagger_args()


def test_package_stays_pure_text():
    code = ("import sys, glossary; g = glossary.Glossary.from_csv(glossary.starter_path()); g.lookup('ボス部の打痕');"
            "bad = [m for m in ('torch', 'streamlit', 'sqlite3', 'sqlite_utils') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_user_dictionary_is_compiled_quietly(capfd):
    g = Glossary([E("defect.impact_mark", "打痕", "ダコン"), E("x.unique", "独自用語テスト")])
    ud = g._user_dictionary()
    assert ud is not None, "fugashi.build_dictionary failed; containment fell back to substrings"
    parsed = ud.parse("ボス部の打痕")
    assert [t.surface for t, _ in parsed] == ["ボス", "部", "の", "打痕"]
    assert parsed[-1][1] == frozenset({"defect.impact_mark"})
    out, err = capfd.readouterr()
    assert "emitting" not in out + err and "pos-id.def" not in out + err


def test_containment_falls_back_to_substrings_without_user_dictionary(monkeypatch):
    from glossary import analyzer

    def broken(*a, **k):
        raise RuntimeError("no mecab-dict-index here")

    monkeypatch.setattr(analyzer, "UserDictionary", broken)
    g = Glossary([E("defect.impact_mark", "打痕", "ダコン"), E("x.fallback", "代替経路用語")])
    r = g.lookup("ボス部の打痕")
    assert g._user_dictionary() is None
    assert r.tier == "contains" and r.suggestions[0].entry_id == "defect.impact_mark"
