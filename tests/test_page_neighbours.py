"""The Neighbours page renders (tiny-test encoder: offline, seconds) with and without labels."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.auth import SYSTEM, Actor
from core.store import Store, now_iso
from tests.conftest import log_in_page

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "neighbours.py")

LABELS = [("オートバイ", "approved"), ("自転車", "approved"), ("擦り傷", "approved"), ("ねじ", "approved"),
          ("scratch", "approved"), ("bolt", "trained"), ("傷", "proposed"), ("rust", "rejected")]


@pytest.fixture(autouse=True)
def _no_env_encoder(monkeypatch):
    monkeypatch.delenv("SGCL_ENCODER", raising=False)


def _home(tmp_path, labels=()):
    store = Store(tmp_path)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})
    for name, status in labels:
        store.insert("labels", {"name": name, "name_key": name, "lang": "ja", "status": status,
                                   "created_by": "alice", "created_at": now_iso()})
    store.close()
    return str(tmp_path)


def _app(home: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    log_in_page(at, home, Actor("alice", "reviewer"))
    at.session_state["lang"] = "en"
    return at


def test_page_without_labels_says_so_and_shows_the_random_encoder(tmp_path):
    at = _app(_home(tmp_path))
    at.run()
    assert not at.exception
    assert any("No labels yet" in i.value for i in at.info)
    assert any("random weights" in w.value for w in at.warning)
    assert any("tiny-test" in c.value for c in at.caption)


def test_page_with_labels_shows_neighbours_and_heatmap(tmp_path):
    at = _app(_home(tmp_path, LABELS))
    at.run()
    assert not at.exception
    # default statuses exclude the rejected label; the selected label is never its own neighbour
    picked = at.selectbox[0].value
    table = at.dataframe[0].value
    assert LABELS[picked - 1][0] not in set(table["Label"])
    assert len(table) == 6  # 7 active labels minus the queried one
    assert "rust" not in set(table["Label"])
    sims = table["Similarity"].tolist()
    assert sims == sorted(sims, reverse=True)
    assert len(at.get("download_button")) == 2  # neighbour table + matrix CSVs

    at.radio[0].set_value("text").run()
    at.text_input[0].set_value("擦り傷").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert table["Label"].iloc[0] == "擦り傷"  # the same text embeds identically: cosine 1


def test_page_japanese_ui(tmp_path):
    at = _app(_home(tmp_path, LABELS))
    at.session_state["lang"] = "ja"
    at.run()
    assert not at.exception
    assert at.title[0].value == "意味の近いラベル"
