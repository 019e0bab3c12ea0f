"""History: per run, the accuracy matrix, each task's forgetting, the rejection rate of the "not one of
the trained classes" threshold, the configuration each task trained with; compare two runs.

Tasks are numbered from 1 here, as everywhere people read them (the database counts from 0)."""
from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from core import runs
from core.run_report import data_revision, run_report
from pages.model_bundle import bundle_download, line_panel
from pages.ui import page_context, run_action
from pages.views import (changes_text, config_rows, encoder_text, join, label_text, local_time, method_title, pct,
                         run_text, task_no)

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("hi.title"))


@st.cache_data(show_spinner=False, max_entries=64)
def _report(_store, home: str, run_id: int, revision: int) -> dict:
    """One run's report, recomputed only when the data revision moves (a task finished, a label was
    renamed, …); ``home`` and ``revision`` key the cache."""
    return run_report(_store, run_id)


all_runs = runs.list_runs(store)
if not all_runs:
    st.info(ctx.t("hi.no_runs"))
    st.stop()
revision = data_revision(store)


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _cell(n: int, lo: int, hi: int, room: int = 640) -> int:
    """Square cells that fit ``room`` pixels for n rows, never smaller than ``lo`` (readable numbers)."""
    return max(lo, min(hi, room // max(1, n)))


def _matrix_chart(matrix: list[list[float]], value_title: str) -> alt.Chart:
    """A lower-triangular matrix as square, labelled cells with the value (%) written inside, for 1–30 tasks."""
    n = len(matrix)
    cell = _cell(n, 20, 56)
    cells = pd.DataFrame([{"trained": task_no(t), "evaluated": task_no(u), "value": 100 * v}
                          for t, row in enumerate(matrix) for u, v in enumerate(row) if _finite(v)])
    numbers = list(range(1, n + 1))
    base = alt.Chart(cells).encode(
        x=alt.X("evaluated:O", title=ctx.t("hi.evaluated"), sort=numbers, scale=alt.Scale(domain=numbers),
                axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("trained:O", title=ctx.t("hi.trained"), sort=numbers, scale=alt.Scale(domain=numbers)))
    heat = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("value:Q", title=value_title,
                        scale=alt.Scale(domain=[0, 100], scheme="viridis")),
        tooltip=[alt.Tooltip("trained:O", title=ctx.t("hi.trained")),
                 alt.Tooltip("evaluated:O", title=ctx.t("hi.evaluated")),
                 alt.Tooltip("value:Q", title=value_title, format=".1f")])
    text = base.mark_text(baseline="middle", fontSize=max(8, min(13, cell // 3))).encode(
        text=alt.Text("value:Q", format=".0f" if cell < 34 else ".1f"),
        color=alt.condition(alt.datum.value > 55, alt.value("black"), alt.value("white")))  # readable on viridis
    # "pad": width and height are the plot's own (square cells); the axes and legend come on top.
    return (heat + text).properties(width=cell * n, height=cell * n,
                                    autosize=alt.AutoSizeParams(type="pad", contains="padding"))


def _matrix_table(matrix: list[list[float]]) -> pd.DataFrame:
    n = len(matrix)
    return pd.DataFrame([[pct(v) for v in row] + [""] * (n - len(row)) for row in matrix],
                        index=[ctx.t("hi.after_task", n=task_no(t)) for t in range(n)],
                        columns=[ctx.t("hi.task_n", n=task_no(u)) for u in range(n)])


def _forgetting(report: dict, key: str) -> None:
    """A bar per earlier task: how far it fell from its best, so one large drop cannot hide in the mean."""
    rows = report["forgetting"]
    if not rows:
        return
    st.markdown(f"**{ctx.t('hi.forgetting_per_task')}**")
    frame = pd.DataFrame([{
        "task": task_no(r["task"]), "drop": 100 * r["drop"], "best": 100 * r["best"], "now": 100 * r["now"],
        "best_after": ctx.t("hi.after_task", n=task_no(r["best_after"])),
        "text": f"{100 * r['best']:.1f} → {100 * r['now']:.1f}"} for r in rows])
    base = alt.Chart(frame).encode(x=alt.X("task:O", title=ctx.t("hi.task"), axis=alt.Axis(labelAngle=0)))
    tooltip = [alt.Tooltip("task:O", title=ctx.t("hi.task")),
               alt.Tooltip("best:Q", title=ctx.t("hi.best"), format=".1f"),
               alt.Tooltip("best_after:N", title=ctx.t("hi.best_when")),
               alt.Tooltip("now:Q", title=ctx.t("hi.now"), format=".1f"),
               alt.Tooltip("drop:Q", title=ctx.t("hi.drop"), format=".1f")]
    bars = base.mark_bar().encode(
        y=alt.Y("drop:Q", title=ctx.t("hi.drop")),
        color=alt.condition(alt.datum.drop > 0, alt.value("#d62728"), alt.value("#2ca02c")), tooltip=tooltip)
    mean = alt.Chart(pd.DataFrame({"mean": [100 * report["summary"]["forgetting"]]})).mark_rule(
        strokeDash=[4, 4]).encode(y="mean:Q")
    layers = bars + mean
    if len(rows) <= 8:   # "66.7 → 50.0" over each bar while there is room; beyond that, in the tooltip
        layers += base.mark_text(dy=-8).encode(y="drop:Q", text="text:N")
    step = max(24, min(64, 900 // len(rows)))    # one bar per task, never a single bar across the page
    st.altair_chart(layers.properties(height=240, width=alt.Step(step)), width="content")
    worst = max(rows, key=lambda r: r["drop"])
    if worst["drop"] > 0:
        st.caption(ctx.t("hi.worst", task=task_no(worst["task"]), best=f"{100 * worst['best']:.1f}",
                         after=task_no(worst["best_after"]), now=f"{100 * worst['now']:.1f}",
                         drop=f"{100 * worst['drop']:.1f}",
                         mean=f"{100 * report['summary']['forgetting']:.1f}"))


def show_run(run: dict, key: str) -> None:
    report = _report(store, str(store.home), run["id"], revision)
    run = report["run"]
    st.caption(ctx.t("hi.run_line", method=method_title(run["config"].get("method", "both"), ctx.lang),
                     encoder=encoder_text(run["encoder"], ctx.lang), by=run["created_by"],
                     at=local_time(store, run["created_at"], ctx.lang)))
    with st.expander(ctx.t("hi.config")):
        # a static table: the interactive grids of this page are the results (the matrix comes first)
        st.table(pd.DataFrame(config_rows(run["config"], ctx.lang)).rename(
            columns={"setting": ctx.t("col.setting"), "value": ctx.t("col.value")}).set_index(ctx.t("col.setting")))
    acc = report["acc"]
    if not acc:
        st.info(ctx.t("hi.no_tasks"))
        return
    summary = report["summary"] or {}
    c1, c2, c3, c4 = st.columns(4)
    c1.metric(ctx.t("hi.aia"), pct(summary.get("aia")))
    c2.metric(ctx.t("hi.last"), pct(summary.get("last")))
    worst = max((r["drop"] for r in report["forgetting"]), default=None)
    c3.metric(ctx.t("hi.forgetting"), pct(summary.get("forgetting")),
              delta=ctx.t("hi.forgetting_max", value=pct(worst)) if worst is not None and worst > 0 else None,
              delta_color="inverse" if worst is not None and worst > 0 else "off", delta_arrow="off",
              help=ctx.t("hi.forgetting_help"))
    c4.metric(ctx.t("hi.bwt"), pct(summary.get("bwt")))
    if summary:
        _forgetting(report, key)

    st.markdown(f"**{ctx.t('hi.matrix')}**")
    st.altair_chart(_matrix_chart(acc, ctx.t("hi.accuracy")), width="content")
    # The same numbers as a table: readable without the chart and checked by the tests.
    st.dataframe(_matrix_table(acc), key=f"hi_matrix_{key}")

    rejected = report["rejected"]
    st.markdown(f"**{ctx.t('hi.rejected')}**")
    if any(_finite(v) for row in rejected for v in row):
        st.caption(ctx.t("hi.rejected_help"))
        st.dataframe(_matrix_table(rejected), key=f"hi_rejected_{key}")
    else:
        st.caption(ctx.t("hi.rejected_unknown"))

    n = len(acc)
    per_step = [100 * v for v in summary.get("per_step", [])] or [math.nan] * n
    steps = pd.DataFrame({"task": [task_no(t) for t in range(n)], "acc": per_step,
                          "series": ctx.t("hi.task_agnostic")})
    if summary.get("per_step_task_aware"):
        steps = pd.concat([steps, pd.DataFrame({"task": [task_no(t) for t in range(n)],
                                                "acc": [100 * v for v in summary["per_step_task_aware"]],
                                                "series": ctx.t("hi.task_aware_short")})])
    st.markdown(f"**{ctx.t('hi.per_step')}**")
    st.altair_chart(alt.Chart(steps).mark_line(point=True).encode(
        x=alt.X("task:O", title=ctx.t("hi.trained"), axis=alt.Axis(labelAngle=0)),
        y=alt.Y("acc:Q", title=ctx.t("hi.accuracy"), scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("series:N", title=ctx.t("hi.series")),
        tooltip=[alt.Tooltip("task:O", title=ctx.t("hi.trained")), alt.Tooltip("series:N", title=ctx.t("hi.series")),
                 alt.Tooltip("acc:Q", title=ctx.t("hi.accuracy"), format=".1f")]), width="stretch")

    st.markdown(f"**{ctx.t('hi.per_task')}**")
    curves = pd.DataFrame([{"trained": task_no(t), "task": ctx.t("hi.task_n", n=task_no(u)), "acc": 100 * v}
                           for t, row in enumerate(acc) for u, v in enumerate(row) if _finite(v)])
    st.altair_chart(alt.Chart(curves).mark_line(point=True).encode(
        x=alt.X("trained:O", title=ctx.t("hi.trained"), axis=alt.Axis(labelAngle=0)),
        y=alt.Y("acc:Q", title=ctx.t("hi.accuracy"), scale=alt.Scale(domain=[0, 100])),
        color=alt.Color("task:N", title=ctx.t("hi.evaluated"),
                        sort=[ctx.t("hi.task_n", n=task_no(u)) for u in range(n)]),
        tooltip=[alt.Tooltip("task:N", title=ctx.t("hi.evaluated")), alt.Tooltip("trained:O", title=ctx.t("hi.trained")),
                 alt.Tooltip("acc:Q", title=ctx.t("hi.accuracy"), format=".1f")]), width="stretch")

    st.markdown(f"**{ctx.t('hi.tasks')}**")
    last_rejected = rejected[-1] if rejected else []
    st.dataframe(pd.DataFrame([{
        ctx.t("hi.task"): task_no(t["idx"]), ctx.t("hi.col.classes"): len(t["label_ids"]),
        ctx.t("hi.col.labels"): join([label_text(l, ctx.lang) for l in t["labels"]], ctx.lang),
        ctx.t("hi.task_aware"): pct(report["acc_task_aware"][t["idx"]][t["idx"]]),
        ctx.t("hi.col.rejected"): pct(last_rejected[t["idx"]] if t["idx"] < len(last_rejected) else None),
        ctx.t("hi.col.config"): changes_text(t["changes"], ctx.lang)}
        for t in report["tasks"]]), hide_index=True, key=f"hi_tasks_{key}")
    if actor.can("report.export"):
        csv_text = run_action(ctx, runs.metrics_csv, store, actor, run["id"])
        if csv_text:
            st.download_button(ctx.t("hi.csv"), csv_text.encode("utf-8"), file_name=f"run-{run['id']}-metrics.csv",
                               mime="text/csv", key=f"hi_csv_{key}")
    done = [t for t in report["tasks"] if t.get("status", "done") == "done"]
    if done:
        bundle_download(ctx, store, actor, run["id"], done[-1]["idx"], key=f"hi_bundle_{key}")
    line_panel(ctx, store, actor, run["id"], key=f"hi_line_{key}")


def _run_label(r: dict) -> str:
    return run_text(r, ctx.lang)


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
