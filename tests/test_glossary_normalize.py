"""normalize_chars / basic_key / kana_key on the pitfall table of spec §2.4 and §5."""
import pytest

from glossary import basic_key, is_kana_only, kana_key, normalize_chars

# (input, normalize_chars, basic_key) — spec §2.4 "basic (proposed)" column, except that tildes stay
# untouched (spec §3.1 step 2.2 and §5; the table's サーバ〜 / す〜じ rows contradict that rule).
PITFALLS = [
    ("ｻｰﾊﾞｰ", "サーバー", "サーバー"),
    ("ＰＣＢ基板", "PCB基板", "pcb基板"),
    ("Ｏリング", "Oリング", "oリング"),
    ("コンピュ−タ−", "コンピューター", "コンピューター"),      # U+2212 after kana
    ("コンピュ－タ－", "コンピューター", "コンピューター"),      # U+FF0D after kana
    ("コンピューーター", "コンピューター", "コンピューター"),    # doubled ー collapses
    ("コンピュ‐タ‐", "コンピューター", "コンピューター"),      # U+2010
    ("コンピュ—タ—", "コンピューター", "コンピューター"),      # U+2014
    ("コンピュ─タ─", "コンピューター", "コンピューター"),      # U+2500
    ("ｺﾝﾋﾟｭｰﾀｰ", "コンピューター", "コンピューター"),         # half-width ｰ
    ("5〜10mm", "5〜10mm", "5〜10mm"),                     # wave dash is a range
    ("5～10mm", "5~10mm", "5~10mm"),                       # NFKC maps U+FF5E to ~; kept
    ("A〜C", "A〜C", "a〜c"),
    ("サーバ〜", "サーバ〜", "サーバ〜"),                       # tildes untouched, even after kana
    ("M3−10", "M3−10", "m3−10"),                           # minus after a digit stays
    ("5-10", "5-10", "5-10"),
    ("寸法　不良", "寸法不良", "寸法不良"),                     # full-width space between kanji
    ("寸法 不良", "寸法不良", "寸法不良"),
    ("  寸法\t不良  ", "寸法不良", "寸法不良"),
    ("foreign matter", "foreign matter", "foreign matter"),  # Latin words keep their space
    ("Foreign   Matter ", "Foreign Matter", "foreign matter"),
    ("PCB 基板", "PCB 基板", "pcb 基板"),                     # ASCII on one side: space kept
    ("㈱", "(株)", "(株)"),
    ("①番", "1番", "1番"),
    ("℃", "°C", "°c"),
    ("㎜", "mm", "mm"),
    ("Ⅱ型", "II型", "ii型"),
    ("剝がれ", "剝がれ", "剝がれ"),                            # 異体字 is the lemma tier's job
    ("ﾈｼﾞ", "ネジ", "ネジ"),
    ("ｷｽﾞ（小）", "キズ(小)", "キズ(小)"),
    ("“傷”", "“傷”", "“傷”"),
]


@pytest.mark.parametrize("raw,norm,basic", PITFALLS)
def test_pitfall_table(raw, norm, basic):
    assert normalize_chars(raw) == norm
    assert basic_key(raw) == basic


def test_normalize_is_idempotent():
    for raw, _, _ in PITFALLS:
        once = normalize_chars(raw)
        assert normalize_chars(once) == once


def test_case_is_preserved_before_analysis():
    # M3 (a screw size) and m3 (a volume) must stay different for MeCab; only keys casefold.
    assert normalize_chars("M3ネジ") == "M3ネジ"
    assert basic_key("M3ネジ") == "m3ネジ"


def test_hyphen_between_kana_and_ascii_code_is_a_separator():
    assert normalize_chars("ネジ-M3") == "ネジ-M3"
    assert normalize_chars("ボルト−10") == "ボルト−10"


def test_dash_at_start_or_after_kanji_is_kept():
    assert normalize_chars("-ネジ") == "-ネジ"
    assert normalize_chars("部品−A") == "部品−A"


def test_kana_key_folds_hiragana():
    assert kana_key("ねじ") == kana_key("ネジ") == kana_key("ﾈｼﾞ") == "ネジ"
    assert kana_key("さび") == "サビ"
    assert kana_key("ゝゞ") == "ヽヾ"


def test_is_kana_only():
    assert is_kana_only("かけ") and is_kana_only("ｶｹ") and is_kana_only("コンピュ−タ−")
    assert not is_kana_only("欠け") and not is_kana_only("M3ネジ") and not is_kana_only("")


def test_empty_and_whitespace():
    assert normalize_chars("") == "" and normalize_chars("　 \n") == ""
    assert basic_key("") == ""
