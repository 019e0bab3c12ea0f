"""CSV import/export: exact columns, BOM, lossless round trip, clear errors with row numbers."""
import io

import pytest

from glossary import Glossary, GlossaryCSVError, GlossaryEntry
from glossary.csvio import COLUMNS

HEADER = ",".join(COLUMNS)


def _g():
    return Glossary([
        GlossaryEntry("defect.rust", "錆", "サビ", "rust", "", ["さび", "サビ", "錆び"], ["寂"], "", "approved"),
        GlossaryEntry("defect.odd", "変, な\"項目\"", "ヘン", "odd, \"quoted\"", "テンプレ: {x}, \"y\"",
                      ["a,b", "c \"d\""], ["defect.rust"],
                      "line one\nline two, with comma | and pipe\r\nline three \"q\"", "draft"),
        GlossaryEntry("part.old", "古い部品", status="deprecated"),
    ])


def test_columns_are_exact():
    text = _g().to_csv()
    assert text.splitlines()[0] == "id,canonical,reading,en,embed_text,aliases,distinct_from,notes,status,notes_ja"


def test_round_trip_is_lossless_via_text():
    g = _g()
    back = Glossary.from_csv(io.StringIO(g.to_csv()))
    assert back.entries == g.entries


def test_round_trip_via_path_writes_bom_and_reads_it(tmp_path):
    g = _g()
    path = tmp_path / "g.csv"
    g.to_csv(path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")          # Excel-friendly UTF-8 with BOM
    back = Glossary.from_csv(path)
    assert back.entries == g.entries
    assert back.get("defect.odd").notes == "line one\nline two, with comma | and pipe\r\nline three \"q\""
    assert back.get("defect.odd").aliases == ["a,b", "c \"d\""]


def test_round_trip_via_binary_file():
    g = _g()
    buf = io.BytesIO()
    g.to_csv(buf)
    assert Glossary.from_csv(io.BytesIO(buf.getvalue())).entries == g.entries


def test_reads_utf8_with_and_without_bom():
    body = f"{HEADER}\r\ndefect.rust,錆,サビ,rust,,さび|サビ,,,approved\r\n"
    for data in (body.encode("utf-8"), body.encode("utf-8-sig")):
        g = Glossary.from_csv(io.BytesIO(data))
        assert [e.id for e in g.entries] == ["defect.rust"]
        assert g.get("defect.rust").aliases == ["さび", "サビ"]


def test_optional_columns_and_default_status_and_trimming():
    data = "id,canonical,aliases\n defect.rust , 錆 , さび | サビ ||\n".encode()
    e = Glossary.from_csv(io.BytesIO(data)).get("defect.rust")
    assert (e.canonical, e.aliases, e.status, e.reading) == ("錆", ["さび", "サビ"], "approved", "")


def test_blank_rows_are_skipped_but_counted():
    data = f"{HEADER}\n\n,,,,,,,,\nx.a,甲,,,,,,,approved\nx.b,,,,,,,,approved\n".encode()
    with pytest.raises(GlossaryCSVError) as err:
        Glossary.from_csv(io.BytesIO(data))
    assert err.value.row == 4 and err.value.field == "canonical"
    assert "row 4" in str(err.value)


def _err(text: str | bytes) -> GlossaryCSVError:
    data = text.encode("utf-8") if isinstance(text, str) else text
    with pytest.raises(GlossaryCSVError) as err:
        Glossary.from_csv(io.BytesIO(data))
    return err.value


def test_missing_required_column():
    e = _err("id,reading\nx,y\n")
    assert (e.row, e.field, e.code) == (0, "canonical", "missing_column")
    assert "canonical" in str(e) and "header" in str(e)


def test_unknown_column_is_refused_rather_than_dropped():
    e = _err(f"{HEADER},category\nx,甲,,,,,,,approved,foo\n")
    assert e.code == "unknown_column" and e.field == "category"


def test_empty_id():
    e = _err(f"{HEADER}\nx.a,甲,,,,,,,approved\n,乙,,,,,,,approved\n")
    assert (e.row, e.field, e.code) == (2, "id", "empty")
    assert "row 2" in str(e)


def test_duplicate_id_names_both_rows():
    e = _err(f"{HEADER}\nx.a,甲,,,,,,,approved\nx.b,乙,,,,,,,approved\nx.a,丙,,,,,,,approved\n")
    assert (e.row, e.field, e.code) == (3, "id", "duplicate_id")
    assert "row 3" in str(e) and "row 1" in str(e)


def test_bad_status():
    e = _err(f"{HEADER}\nx.a,甲,,,,,,,approved\nx.b,乙,,,,,,,done\n")
    assert (e.row, e.field, e.code) == (2, "status", "bad_status")
    assert "done" in str(e)


def test_wrong_number_of_fields():
    e = _err(f"{HEADER}\nx.a,甲,,,,,,,approved\nx.b,乙,オツ,second, with comma,,,,,approved\n")
    assert (e.row, e.code) == (2, "field_count")
    assert "row 2" in str(e) and "10" in str(e)


def test_row_and_line_differ_after_a_multiline_note():
    e = _err(f'{HEADER}\nx.a,甲,,,,,,"two\nlines",approved\nx.b,乙,,,,,,,maybe\n')
    assert e.row == 2 and e.line == 4
    assert "row 2 (line 4)" in str(e)


def test_cp932_file_is_refused_with_a_hint():
    data = f"{HEADER}\r\ndefect.rust,錆,サビ,rust,,さび,,,approved\r\n".encode("cp932")
    e = _err(data)
    assert e.code == "encoding" and e.row == 1 and e.line == 2
    assert "UTF-8" in str(e) and "line 2" in str(e)


def test_empty_file():
    assert _err(b"").code == "empty_file"


def test_error_is_a_value_error_with_attributes():
    e = _err(f"{HEADER}\nx.a,,,,,,,,approved\n")
    assert isinstance(e, ValueError)
    assert e.row == 1 and e.field == "canonical" and e.reason


@pytest.mark.parametrize("value", ["=1+1", "'quoted", "-M3", "+81", "@SUM(A1)", "\tx", "''twice", "it's", "a=b"])
def test_formula_like_cells_are_escaped_and_read_back_exactly(value):
    g = Glossary([GlossaryEntry("x.v", "用語" + value.strip() if value.strip() else "用語", en=value.strip(),
                                notes=value, aliases=[value.strip() + "1"])])
    text = g.to_csv()
    cells = next(iter(__import__("csv").DictReader(io.StringIO(text))))
    for name in ("en", "notes", "aliases"):
        assert not cells[name].startswith(("=", "+", "-", "@", "\t")), (name, cells[name])
    back = Glossary.from_csv(io.StringIO(text)).get("x.v")
    assert (back.en, back.notes, back.aliases) == (value.strip(), value, [value.strip() + "1"])


def test_one_leading_apostrophe_of_a_hand_written_cell_is_read_as_the_escape():
    text = HEADER + "\r\nx.a,'=1+1,,'-M3,,,,'note,approved\r\n"
    e = Glossary.from_csv(io.StringIO(text)).get("x.a")
    assert (e.canonical, e.en, e.notes) == ("=1+1", "-M3", "note")
