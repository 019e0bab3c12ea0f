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
