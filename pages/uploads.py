"""Upload caps that follow the admin's limits (UI only; the limits themselves live in core/settings).

Streamlit enforces two caps: each ``st.file_uploader``'s ``max_upload_size`` (checked in the browser,
shown in the widget as "… MB per file") and ``server.maxUploadSize`` (checked by the server on every
upload request, whatever the client). The public ``st.set_option`` refuses ``server.*`` options, so
the server cap is set through ``streamlit.config.set_option`` — the server reads it per request — to
the largest of the admin's per-file limits, before any uploader is drawn. ``.streamlit/config.toml``
holds the value in force until a page with an uploader first runs.
"""
from __future__ import annotations

from streamlit import config as st_config

from core import images
from core.store import Store


def upload_caps(store: Store) -> dict[str, int]:
    """The caps in whole MB (``image``, ``zip``, ``server``), with the server cap applied."""
    caps = images.upload_caps_mb(store)
    if st_config.get_option("server.maxUploadSize") != caps["server"]:
        st_config.set_option("server.maxUploadSize", caps["server"], "sgcl-studio admin settings")
    return caps


def localise_uploader(key: str, lang: str, max_mb: int, types) -> None:
    """Streamlit draws the uploader's button ("Upload") and its limit line ("20MB per file • PNG") in
    English whatever the app's language, and offers no option to change them. In Japanese, the two
    texts of the uploader with this key are replaced through CSS (the widget's ``st-key-<key>`` class
    and its stable test ids); the widget still enforces ``max_upload_size`` itself. Constant text
    only: nothing a user typed goes into the CSS."""
    import streamlit as st

    from core.i18n import t

    if lang == "en":
        return
    kinds = ", ".join(str(x).upper() for x in types)
    button = t("up.button", lang)
    limit = t("up.limit", lang, mb=int(max_mb)) + (f" • {kinds}" if kinds else "")

    def css_text(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\3c ") + '"'

    scope = f".st-key-{key}"
    st.html(f"""<style>
{scope} [data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p {{font-size: 0 !important;}}
{scope} [data-testid="stFileUploaderDropzone"] button [data-testid="stMarkdownContainer"] p::after {{
  content: {css_text(button)}; font-size: 0.875rem;}}
{scope} [data-testid="stFileUploaderDropzoneInstructions"] span {{font-size: 0 !important;}}
{scope} [data-testid="stFileUploaderDropzoneInstructions"] span::after {{
  content: {css_text(limit)}; font-size: 0.875rem;}}
</style>""")
