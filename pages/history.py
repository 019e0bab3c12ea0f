"""History: per run, the accuracy matrix and the continual-learning metrics; compare two runs."""
from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from core import runs

from core.labels import get_label
from pages.ui import page_context, run_action

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("hi.title"))

all_runs = runs.list_runs(store)
if not all_runs:
    st.info(ctx.t("hi.no_runs"))
    st.stop()


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _label_names(ids: list[int]) -> str:
    names = []
    for i in ids:
        try:
            label = get_label(store, i)
            names.append(label["canonical"] if label["canonical"] == label["name"] else f"{label['canonical']}（{label['name']}）")
        except Exception:
            names.append(f"#{i}")
    return "、".join(names) if ctx.lang == "ja" else ", ".join(names)


def show_run(run: dict, key: str) -> None:
    data = runs.run_summary(store, run["id"])
    st.caption(ctx.t("hi.encoder", spec=run["encoder"], by=run["created_by"], at=run["created_at"]))
    with st.expander(ctx.t("hi.config")):
        st.json(run["config"])
    if not data["acc"]:
        st.info(ctx.t("hi.no_tasks"))
        return
    summary = data["summary"] or {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(ctx.t("hi.aia"), _pct(summary.get("aia")))
    c2.metric(ctx.t("hi.last"), _pct(summary.get("last")))
    c3.metric(ctx.t("hi.forgetting"), _pct(summary.get("forgetting")))
    c4.metric(ctx.t("hi.bwt"), _pct(summary.get("bwt")))

    cells = [{"trained": t, "evaluated": u, "acc": 100 * v}
             for t, row in enumerate(data["acc"]) for u, v in enumerate(row) if not math.isnan(v)]
    frame = pd.DataFrame(cells)
    st.markdown(f"**{ctx.t('hi.matrix')}**")
    base = alt.Chart(frame).encode(
        x=alt.X("evaluated:O", title=ctx.t("hi.evaluated")),
        y=alt.Y("trained:O", title=ctx.t("hi.trained")))
    heat = base.mark_rect().encode(
        color=alt.Color("acc:Q", title=ctx.t("hi.accuracy"), scale=alt.Scale(domain=[0, 100], scheme="viridis")),
        tooltip=["trained", "evaluated", alt.Tooltip("acc:Q", format=".1f")])
    text = base.mark_text(baseline="middle").encode(
        text=alt.Text("acc:Q", format=".1f"),
        color=alt.condition(alt.datum.acc > 60, alt.value("black"), alt.value("white")))
    st.altair_chart(heat + text, width="stretch")
    # The same numbers as a table: readable without the chart and checked by the tests.
    st.dataframe(pd.DataFrame([[_pct(v) for v in row] + [""] * (len(data["acc"]) - len(row)) for row in data["acc"]],
                              index=[f"{ctx.t('hi.trained')} {t}" for t in range(len(data["acc"]))],
                              columns=[f"{ctx.t('hi.task')} {u}" for u in range(len(data["acc"]))]),
                 key=f"hi_matrix_{key}")

    steps = pd.DataFrame({"task": range(len(data["acc"])), "acc": [100 * v for v in summary.get("per_step", [])]
                          or [math.nan] * len(data["acc"]), "series": ctx.t("hi.task_agnostic")})
    if summary.get("per_step_task_aware"):
        steps = pd.concat([steps, pd.DataFrame({"task": range(len(data["acc"])),
                                                "acc": [100 * v for v in summary["per_step_task_aware"]],
                                                "series": ctx.t("hi.task_aware_short")})])
    st.markdown(f"**{ctx.t('hi.per_step')}**")
    st.altair_chart(alt.Chart(steps).mark_line(point=True).encode(
        x=alt.X("task:O", title=ctx.t("hi.trained")), y=alt.Y("acc:Q", title=ctx.t("hi.accuracy"),
                                                               scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("series:N", title=ctx.t("hi.series"))), width="stretch")

    st.markdown(f"**{ctx.t('hi.per_task')}**")
    curves = frame.assign(task=frame["evaluated"].map(lambda u: f"{ctx.t('hi.task')} {u}"))
    st.altair_chart(alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("trained:O", title=ctx.t("hi.trained")),
        y=alt.Y("acc:Q", title=ctx.t("hi.accuracy"), scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("task:N", title=ctx.t("hi.evaluated"))), width="stretch")

    st.markdown(f"**{ctx.t('hi.tasks')}**")
    st.dataframe(pd.DataFrame([{ctx.t("hi.task"): t["idx"], ctx.t("hi.col.classes"): len(t["label_ids"]),
                                ctx.t("hi.col.labels"): _label_names(t["label_ids"]),
                                ctx.t("hi.task_aware"):
                                    _pct(data["acc_task_aware"][t["idx"]][t["idx"]])}
                               for t in data["tasks"]]), hide_index=True, key=f"hi_tasks_{key}")
    if actor.can("report.export"):
        csv_text = run_action(ctx, runs.metrics_csv, store, actor, run["id"])
        if csv_text:
            st.download_button(ctx.t("hi.csv"), csv_text.encode("utf-8"), file_name=f"run-{run['id']}-metrics.csv",
                               mime="text/csv", key=f"hi_csv_{key}")


def _run_label(r: dict) -> str:
    return f"#{r['id']} {r['name']} ({r['encoder']})"


run = st.selectbox(ctx.t("hi.run"), all_runs, format_func=_run_label, key="hi_run")
compare = len(all_runs) > 1 and st.toggle(ctx.t("hi.compare"), key="hi_compare")
if compare:
    others = [r for r in all_runs if r["id"] != run["id"]]
    other = st.selectbox(ctx.t("hi.other"), others, format_func=_run_label, key="hi_other")
    left, right = st.columns(2)
    with left:
        st.subheader(_run_label(run))
        show_run(run, "a")
    with right:
        st.subheader(_run_label(other))
        show_run(other, "b")
else:
    show_run(run, "a")
