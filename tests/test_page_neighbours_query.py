"""The Neighbours page's free-text query is user text like any other: it goes through core.inputs
(``clean_name``) before anything embeds it — a 10,000-character query once kept e5 busy for 43 s —
and a refusal is shown in the reader's language."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from core import settings
from core.auth import SYSTEM, Actor
from core.inputs import MAX_NAME
from core.store import Store, now_iso
from tests.conftest import REPO, log_in_page


@pytest.fixture
def home(sgcl_home, monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)
    monkeypatch.delenv("SGCL_ENCODER", raising=False)
    store = Store(sgcl_home)
    settings.update(store, SYSTEM, {"encoder": "tiny-test"})
    for name in ("オートバイ", "自転車", "擦り傷", "scratch"):
        store.insert("labels", {"name": name, "name_key": name, "lang": "ja", "status": "approved",
                                   "created_by": "alice", "created_at": now_iso()})
    store.close()
    return sgcl_home


@pytest.fixture
def embedded(monkeypatch) -> list[str]:
    """The texts the page asked core.neighbours / core.dictionary about (the real functions still run)."""
    import core.dictionary
    import core.neighbours

    seen: list[str] = []
    for module, name in ((core.neighbours, "neighbours"), (core.neighbours, "near_duplicates"),
                         (core.dictionary, "label_links")):
        real = getattr(module, name)

        def spy(store, *args, _real=real, _text_at=0 if name == "label_links" else 1, **kwargs):
            text = args[_text_at]
            if isinstance(text, str):
                seen.append(text)
            return _real(store, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    return seen


def _text_query(home, lang: str) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, home, Actor("alice", "reviewer"), lang=lang)
    at.run()
    at.switch_page("pages/neighbours.py").run()
    assert not at.exception, at.exception
    at.radio[0].set_value("text").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("lang, words", [("en", "Too long"), ("ja", "長すぎます")])
def test_a_10000_character_query_is_refused_in_the_users_language_without_embedding_it(home, embedded, lang,
                                                                                       words):
    at = _text_query(home, lang)
    at.text_input[0].input("傷" * 10_000).run()
    assert not at.exception, at.exception
    assert any(words in e.value and "10000" in e.value and str(MAX_NAME) in e.value for e in at.error), \
        [e.value for e in at.error]
    assert at.text_input[0].value == "傷" * 10_000      # kept, to shorten
    assert embedded == []
    assert not [df for df in at.dataframe if len(df.value.columns) == 6]      # no neighbour table


def test_a_query_is_cleaned_before_it_is_embedded(home, embedded):
    at = _text_query(home, "en")
    at.text_input[0].input("  擦り\u200b傷  ").run()          # a zero-width space and blanks around it
    assert not at.exception, at.exception
    assert not at.error
    assert embedded and set(embedded) == {"擦り傷"}
