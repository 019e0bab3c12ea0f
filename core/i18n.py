"""UI and error strings in Japanese and English: one gettext catalogue per language, loaded once.

The catalogues are ``core/locales/<lang>/LC_MESSAGES/sgcl.po`` (read with Babel, so translators can use
any PO editor). A message id is the key the code uses (``train.phase.batch``); its text may hold
``{name}`` parameters (``str.format``). Pages call ``t(key, lang, **params)``; services raise
``UserError(key, **params)`` whose text is rendered in the caller's language by the page
(``err.message(lang)``), so a refusal reads the same whether it came from a button or a test.

Every string exists from the first import, whatever else has been imported (strings used to be
registered by the module that owned them, so a page could show a raw key until that module was
loaded). An unknown key is a bug: with ``SGCL_I18N_STRICT=1`` (set by the tests) ``t`` raises
:class:`MissingMessage`; otherwise it logs once and shows the key.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
from pathlib import Path

LANGS = ("ja", "en")
DEFAULT_LANG = "ja"
CATALOGUE_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "sgcl"

log = logging.getLogger("sgcl.i18n")


class MissingMessage(KeyError):
    """A key that neither catalogue holds (only raised in strict mode)."""


def catalogue_path(lang: str) -> Path:
    return CATALOGUE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_catalogues() -> dict[str, dict[str, str]]:
    """``{key: {lang: text}}`` from the PO files; a key missing in one language falls back to the
    other at render time (tests/test_i18n_catalogue.py keeps the two in step)."""
    from babel.messages.pofile import read_po

    strings: dict[str, dict[str, str]] = {}
    for lang in LANGS:
        with catalogue_path(lang).open("rb") as fh:
            catalogue = read_po(fh, locale=lang, domain=DOMAIN)
        for message in catalogue:
            if message.id and message.string:
                strings.setdefault(str(message.id), {})[lang] = str(message.string)
    return strings


# key -> {lang: text}; read once per process.
STRINGS: dict[str, dict[str, str]] = load_catalogues()
_WARNED: set[str] = set()


def strict() -> bool:
    return os.environ.get("SGCL_I18N_STRICT", "") not in ("", "0")


def has(key: str) -> bool:
    return key in STRINGS


# What makes user text live in Markdown (CommonMark + GFM + Streamlit's additions), escaped with a
# backslash (a literal in CommonMark): brackets (links ``[x](url)``, images ``![x](url)``, Streamlit's
# ``:red[…]``), angle brackets (autolinks, raw HTML), backticks, backslashes, ``$`` (math), ``*``/``~``
# (emphasis, strike-through) and ``_`` where it could start or end emphasis (not inside a word, so
# ``file_name_1`` stays readable). Bare URLs would become links (GFM autolinks): ``http://`` and ``www.``
# are broken up. Other punctuation (``( ) - . + : #`` …) means nothing mid-line and stays as typed.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>$~])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_AUTOLINK = re.compile(r"(?i)(?<=[a-z0-9])(:)(?=//)|(?<=\bwww)(\.)")
_LINE_START = re.compile(r"^([#>+\-=|])")
_MARKDOWN_PARAMS: contextvars.ContextVar[bool] = contextvars.ContextVar("sgcl_markdown_params", default=False)


def escape_markdown(text: str) -> str:
    """``text`` as a literal inside Markdown: ``![t](http://host/x.png)`` shows as typed instead of
    fetching the picture, ``[Session expired](http://…)`` is not a link. Line breaks become spaces."""
    text = str(text).replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = _MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    # a backslash before "://" is not enough: Streamlit's renderer still turned "http\://host" into a
    # live link (seen in the real browser); an invisible word joiner breaks the autolink pattern itself
    text = _AUTOLINK.sub(lambda m: m.group(0) + "\u2060", text)
    return _LINE_START.sub(r"\\\1", text)


def as_markdown(fn, *args, **kwargs):
    """Call ``fn`` (something that builds messages with :func:`t`, e.g. ``err.message``) so that every
    text parameter of every message it builds is Markdown-escaped: for st.error / st.warning / st.caption
    and the other Markdown-rendering widgets."""
    token = _MARKDOWN_PARAMS.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _MARKDOWN_PARAMS.reset(token)


def t_markdown(key: str, lang: str = DEFAULT_LANG, **params) -> str:
    """:func:`t` with every text parameter Markdown-escaped (the catalogue's own Markdown stays)."""
    return as_markdown(t, key, lang, **params)


def t(key: str, lang: str = DEFAULT_LANG, **params) -> str:
    if params and _MARKDOWN_PARAMS.get():
        params = {k: escape_markdown(v) if isinstance(v, str) else v for k, v in params.items()}
    texts = STRINGS.get(key)
    if texts is None:
        if strict():
            raise MissingMessage(key)
        if key not in _WARNED:
            _WARNED.add(key)
            log.warning("no catalogue entry for message key %r", key)
        return key
    text = texts.get(lang) or texts[DEFAULT_LANG]
    try:
        return text.format(**params)
    except (KeyError, IndexError):
        return text


class UserError(Exception):
    """A refusal or bad input the user can act on. ``key`` names a string in STRINGS."""

    def __init__(self, key: str, **params):
        self.key = key
        self.params = params
        super().__init__(t(key, "en", **params))

    def message(self, lang: str = DEFAULT_LANG) -> str:
        return t(self.key, lang, **localise_params(self.params, lang))


# Parameters whose values are codes (a status, a role list, an action, a kind of thing): shown in the
# reader's language when a string exists for them, e.g. status=approved → 承認済み.
_PARAM_PREFIX = {"status": "status", "action": "action", "what": "what", "role": "role",
                 "field": "input.field"}


def localise_params(params: dict, lang: str) -> dict:
    out = dict(params)
    for name, prefix in _PARAM_PREFIX.items():
        value = out.get(name)
        if isinstance(value, str) and f"{prefix}.{value}" in STRINGS:
            out[name] = t(f"{prefix}.{value}", lang)
    if isinstance(out.get("roles"), str):
        roles = [r.strip() for r in out["roles"].split(",") if r.strip()]
        out["roles"] = ("、" if lang == "ja" else ", ").join(t(f"role.{r}", lang) for r in roles)
    return out
