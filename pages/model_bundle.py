"""The model-bundle download shown on History and Predict (supervisors and admins): the stored bundle
of a completed task (core/deploy/bundle.py), or a button that exports it when it is missing."""
from __future__ import annotations

import streamlit as st

from core.deploy import bundle as bundle_service
from pages.ui import run_action
from pages.views import task_no


def bundle_download(ctx, store, actor, run_id: int, task_idx: int, key: str) -> None:
    if not actor.can("model.export"):
        return
    stored = bundle_service.stored_bundle(store, actor, run_id, task_idx)
    if stored is not None:
        name, data = stored
        st.download_button(ctx.t("mb.download", task=task_no(task_idx)), data, file_name=name,
                           mime="application/zip", key=f"{key}_download", help=ctx.t("mb.help"),
                           on_click=bundle_service.record_download, args=(store, actor, run_id, task_idx))
    elif st.button(ctx.t("mb.export", task=task_no(task_idx)), key=f"{key}_export", help=ctx.t("mb.help")):
        with st.spinner(ctx.t("mb.exporting")):
            if run_action(ctx, bundle_service.export_bundle, store, actor, run_id, task_idx,
                          success=ctx.t("mb.exported")):
                st.rerun()
