"""The sidebar of every page (app.py): who is logged in, and the active encoder by its human title
(backbone + text encoder) with its spec, plus a warning when its weights are random."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.auth import SYSTEM, Actor
from core.store import Store
from tests.conftest import REPO, log_in_page


@pytest.fixture
def home(sgcl_home, monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    return sgcl_home


def _sidebar_texts(home, lang: str) -> tuple[list[str], list[str]]:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, home, Actor("eri", "expert"), lang=lang)
    at.run()
    assert not at.exception, at.exception
    return [c.value for c in at.sidebar.caption], [w.value for w in at.sidebar.warning]


@pytest.mark.parametrize("lang, word", [("en", "Encoder"), ("ja", "エンコーダー")])
def test_the_sidebar_names_the_default_encoder_by_its_title_and_spec(home, lang, word):
    store = Store(home)
    spec = settings.get(store, "encoder")
    assert spec == "effnet-lite0+use-m3"
    store.close()
    captions, warnings = _sidebar_texts(home, lang)
    [line] = [c for c in captions if word in c]
    assert "EfficientNet-Lite0 (ImageNet-1k) + Universal Sentence Encoder multilingual v3" in line
    assert (f"（{spec}）" if lang == "ja" else f"({spec})") in line
    assert warnings == []                           # pretrained weights: no warning


def test_an_encoder_with_random_weights_is_named_and_warned_about(home):
    store = Store(home)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})
    store.close()
    captions, warnings = _sidebar_texts(home, "en")
    assert any("tiny test model (random weights) (tiny-test)" in c for c in captions), captions
    assert any("random weights" in w for w in warnings)
    captions, _ = _sidebar_texts(home, "ja")           # descriptive titles in the reader's language
    assert any("テスト用の小型モデル（ランダムな重み）" in c for c in captions), captions
