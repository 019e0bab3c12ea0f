"""The two string catalogues (core/locales/{ja,en}/LC_MESSAGES/sgcl.po) stay in step."""
from __future__ import annotations

import string

import pytest

from core import i18n


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_key_has_both_languages():
    missing = {key: sorted(set(i18n.LANGS) - set(texts)) for key, texts in i18n.STRINGS.items()
               if set(texts) != set(i18n.LANGS)}
    assert missing == {}


def test_both_languages_take_the_same_parameters():
    differ = {key: (_fields(texts["ja"]), _fields(texts["en"])) for key, texts in i18n.STRINGS.items()
              if _fields(texts["ja"]) != _fields(texts["en"])}
    assert differ == {}


def test_unknown_key_is_an_error_in_strict_mode(monkeypatch):
    monkeypatch.setenv("SGCL_I18N_STRICT", "1")
    with pytest.raises(i18n.MissingMessage):
        i18n.t("no.such.key", "ja")


def test_unknown_key_renders_as_itself_outside_strict_mode(monkeypatch):
    monkeypatch.setenv("SGCL_I18N_STRICT", "0")
    assert i18n.t("no.such.key.either", "en") == "no.such.key.either"


def test_catalogue_text_is_formatted_in_the_reader_language():
    assert i18n.t("train.phase.batch", "ja", epoch=2, epochs=8, batch=3, batches=5) == "エポック 2/8 · バッチ 3/5"
    assert i18n.t("train.phase.batch", "en", epoch=2, epochs=8, batch=3, batches=5) == "epoch 2/8 · batch 3/5"
