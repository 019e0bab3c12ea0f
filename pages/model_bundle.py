"""Shown on History and Predict: the model-bundle download (supervisors and admins) — the stored bundle
of a completed task (core/deploy/bundle.py), or a button that exports it when it is missing — and what
the line saw through the inference service (core/deploy/predictions.py)."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core.deploy import bundle as bundle_service
from core.deploy.predictions import line_summary
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


def line_panel(ctx, store, actor, run_id: int, key: str) -> None:
    """Counts per class and the unknown rate per day of the run's recorded service predictions."""
    summary = line_summary(store, actor, run_id)
    st.markdown(f"**{ctx.t('line.title')}**")
    if not summary["total"]:
        st.caption(ctx.t("line.none"))
        return
    st.caption(ctx.t("line.totals", n=summary["total"], unknown=summary["unknown"],
                     rate=f"{100 * summary['unknown'] / summary['total']:.1f}",
                     versions=", ".join(summary["versions"])))
    left, right = st.columns(2)
    cls_col, n_col, day_col, rate_col = ctx.t("line.class"), ctx.t("line.count"), ctx.t("line.day"), ctx.t("line.rate")
    if summary["per_class"]:
        per_class = pd.DataFrame([{cls_col: r["name"], n_col: r["n"]} for r in summary["per_class"]])
        left.altair_chart(alt.Chart(per_class).mark_bar().encode(
            x=alt.X(f"{n_col}:Q"), y=alt.Y(f"{cls_col}:N", sort="-x"), tooltip=[cls_col, n_col]),
            width="stretch", key=f"{key}_classes")
    per_day = pd.DataFrame([{day_col: d["day"], rate_col: 100 * d["rate"], n_col: d["n"]} for d in summary["per_day"]])
    right.altair_chart(alt.Chart(per_day).mark_line(point=True).encode(
        x=alt.X(f"{day_col}:T"), y=alt.Y(f"{rate_col}:Q", scale=alt.Scale(domain=[0, 100])),
        tooltip=[day_col, alt.Tooltip(f"{rate_col}:Q", format=".1f"), n_col]), width="stretch", key=f"{key}_unknown")
