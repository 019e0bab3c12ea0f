"""Predict: classify one image with a run's latest completed task, and say so plainly when the image is
not one of the classes the model was trained on (its familiarity — core/sg/openset.py — is below the
threshold calibrated on the trained classes' holdout images)."""
from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from core import images, runs
from core.prediction import predict_image
from pages.model_bundle import bundle_download, line_panel
from pages.ui import page_context, run_action
from pages.uploads import localise_uploader, upload_caps
from pages.views import encoder_text, method_title, run_text, task_no

ctx = page_context()


def _typicality(where, result: dict) -> None:
    """The calibrated answer beside the raw score: the conformal p-value (the share of the trained
    classes' held-out images that looked at most this familiar), never a softmax 1.000."""
    if result.get("p_value") is not None:
        where.caption(ctx.t("pr.p_value", p=f"{result['p_value']:.3f}"))


store, actor = ctx.store, ctx.actor
st.title(ctx.t("pr.title"))

ready = [r for r in runs.list_runs(store) if runs.done_tasks(store, r["id"])]
if not ready:
    st.info(ctx.t("pr.no_runs"))
    st.stop()

run = st.selectbox(ctx.t("pr.run"), ready, key="pr_run",
                   format_func=lambda r: run_text(r, ctx.lang))
done = runs.done_tasks(store, run["id"])
st.caption(ctx.md("pr.model_line", idx=task_no(done[-1]["idx"]), classes=len({i for t in done for i in t["label_ids"]}),
                 method=method_title(run["config"].get("method", "both"), ctx.lang),
                 encoder=encoder_text(run["encoder"], ctx.lang)))
bundle_download(ctx, store, actor, run["id"], done[-1]["idx"], key="pr_bundle")
line_panel(ctx, store, actor, run["id"], key="pr_line")
k = st.slider(ctx.t("pr.top_k"), 1, 10, 5, key="pr_k")

image_cap = upload_caps(store)["image"]
uploaded = st.file_uploader(ctx.t("pr.upload"), type=list(images.IMAGE_EXTENSIONS), key="pr_upload",
                            max_upload_size=image_cap, help=ctx.t("pr.upload_help", mb=image_cap))
localise_uploader("pr_upload", ctx.lang, image_cap, images.IMAGE_EXTENSIONS)
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
    # One prediction per image, model and k: a rerun for anything else (the language, a click
    # elsewhere) redraws the answer without running the model again.
    memo_key = (run["id"], done[-1]["idx"], hashlib.sha256(data).hexdigest(), k)
    memo = st.session_state.get("pr_memo")
    if memo and memo[0] == memo_key:
        result = memo[1]
    else:
        result = run_action(ctx, predict_image, store, actor, run["id"], data, k)
        if result:
            st.session_state["pr_memo"] = (memo_key, result)
    if result:
        left, right = st.columns([1, 2])
        left.image(data, width=160)
        if truth:
            left.caption(ctx.md("pr.truth", name=truth))
        threshold = result.get("threshold")
        # which similarity decided: to the trained classes' images, or (models that train all their
        # features) to the best class itself
        def _decided_by(key: str) -> str:
            """The message naming the score that decided: the class score, a closed-form head's
            Mahalanobis familiarity, or the similarity to the trained classes' images."""
            kind = result.get("score")
            return f"{key}_class" if kind == "class" else f"{key}_maha" if kind == "maha" else key

        if result.get("rejected"):
            right.error(ctx.t(_decided_by("pr.rejected"), best=f"{result['best']:.3f}", threshold=f"{threshold:.3f}"))
            _typicality(right, result)
            right.markdown(f"**{ctx.t('pr.guesses', idx=task_no(result['task']))}**")
        else:
            if threshold is None:
                right.caption(ctx.t("pr.no_threshold"))
            right.markdown(f"**{ctx.t('pr.results', idx=task_no(result['task']))}**")
        score_col, cosine_col = ctx.t("pr.col.score"), ctx.t("pr.col.cosine")
        table = pd.DataFrame([{
            # the label as the team named it (ヒビ割れ), its glossary term (亀裂) beside it
            ctx.t("pr.col.rank"): rank, ctx.t("pr.col.name"): p["name"], ctx.t("pr.col.canonical"): p["canonical"],
            ctx.t("pr.col.reading"): p["reading"], ctx.t("pr.col.en"): p["en"], score_col: round(p["score"], 3),
            cosine_col: round(p["cosine"], 3)}
            for rank, p in enumerate(result["predictions"], start=1)])
        if result.get("rejected"):
            # Still shown (the closest classes help an expert decide what the image is), but greyed out.
            table = table.style.set_properties(**{"color": "#888888"})
        # the full width of the page, under the image: in the narrow right column the last column was cut off
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            score_col: st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f",
                                                       help=ctx.t("pr.col.score_help")),
            cosine_col: st.column_config.NumberColumn(help=ctx.t("pr.col.cosine_help"), format="%.3f")})
        if threshold is not None and not result.get("rejected"):
            st.caption(ctx.t(_decided_by("pr.accepted"), best=f"{result['best']:.3f}", threshold=f"{threshold:.3f}"))
            _typicality(st, result)
