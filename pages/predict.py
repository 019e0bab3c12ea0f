"""Predict: classify one image with a run's latest completed task."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import images, runs
from core.prediction import predict_image
from pages.ui import page_context, run_action
from pages.uploads import upload_caps

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("pr.title"))

ready = [r for r in runs.list_runs(store) if runs.done_tasks(store, r["id"])]
if not ready:
    st.info(ctx.t("pr.no_runs"))
    st.stop()

run = st.selectbox(ctx.t("pr.run"), ready, key="pr_run", format_func=lambda r: f"#{r['id']} {r['name']} ({r['encoder']})")
done = runs.done_tasks(store, run["id"])
st.caption(ctx.t("pr.model", idx=done[-1]["idx"], classes=sum(len(t["label_ids"]) for t in done), encoder=run["encoder"]))
k = st.slider(ctx.t("pr.top_k"), 1, 10, 5, key="pr_k")

image_cap = upload_caps(store)["image"]
uploaded = st.file_uploader(ctx.t("pr.upload"), type=list(images.IMAGE_EXTENSIONS), key="pr_upload",
                            max_upload_size=image_cap, help=ctx.t("pr.upload_help", mb=image_cap))
samples = images.holdout_samples(store, [lid for t in done for lid in t["label_ids"]])
none = {"id": None}
sample = st.selectbox(ctx.t("pr.sample"), [none] + samples, key="pr_sample",
                      format_func=lambda r: ctx.t("pr.none") if r["id"] is None
                      else f"#{r['id']} {r['label_name']} · {r['original_name']}")

data, truth = None, None
if uploaded is not None:
    data = uploaded.getvalue()
elif sample["id"] is not None:
    try:
        data, truth = images.image_path(store, sample).read_bytes(), sample["label_name"]
    except OSError:   # the file was removed from the data home behind the database's back
        st.error(ctx.t("pr.missing_file", id=sample["id"]))

if data is not None:
    result = run_action(ctx, predict_image, store, actor, run["id"], data, k)
    if result:
        left, right = st.columns([1, 2])
        left.image(data, width=160)
        if truth:
            left.caption(ctx.t("pr.truth", name=truth))
        right.markdown(f"**{ctx.t('pr.results', idx=result['task'])}**")
        right.dataframe(pd.DataFrame([{
            ctx.t("pr.col.rank"): rank, ctx.t("pr.col.canonical"): p["canonical"],
            ctx.t("pr.col.reading"): p["reading"], ctx.t("pr.col.en"): p["en"], ctx.t("pr.col.score"): p["score"]}
            for rank, p in enumerate(result["predictions"], start=1)]), hide_index=True,
            column_config={ctx.t("pr.col.score"): st.column_config.ProgressColumn(min_value=0.0, max_value=1.0,
                                                                                    format="%.3f")})
