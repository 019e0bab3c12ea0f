"""History: per run, the accuracy matrix, each task's forgetting, the rejection rate of the "not one of
the trained classes" threshold, the configuration each task trained with; compare two runs.

Tasks are numbered from 1 here, as everywhere people read them (the database counts from 0)."""
from __future__ import annotations

import json
import math

import altair as alt
import pandas as pd
import streamlit as st

from core import runs
from core.run_report import data_revision, run_report
from pages.model_bundle import bundle_download, line_panel
from pages.ui import md, page_context, run_action
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


def _new_columns(report: dict) -> list[int]:
    """The tasks that are columns of the matrix: new-class tasks (an update adds a row, not a column)."""
    return [u for u, kind in enumerate(report["kinds"]) if kind == "new"]


def _row_title(report: dict, t: int) -> str:
    kind = report["kinds"][t] if t < len(report["kinds"]) else "new"
    return ctx.t("hi.after_task_update" if kind == "update" else "hi.after_task", n=task_no(t))


def _interval(cell: dict) -> str:
    return f"{100 * cell['low']:.0f}–{100 * cell['high']:.0f}%"


def _matrix_chart(report: dict, value_title: str) -> alt.Chart:
    """The accuracy matrix as square, labelled cells: the value (%) inside, the number of holdout images
    under it, grey and without a percentage when too few images; the interval in the tooltip."""
    cells_in = report["cells"]
    rows, cols = len(cells_in), _new_columns(report)
    cell = _cell(max(rows, len(cols)), 20, 56)
    cells = pd.DataFrame([{
        "trained": task_no(t), "evaluated": task_no(u), "value": 100 * c["acc"] if c["enough"] else None,
        "shown": f"{100 * c['acc']:.0f}" if cell < 34 else f"{100 * c['acc']:.1f}", "n": c["n"],
        "n_text": f"n={c['n']}", "right": c["correct"], "interval": _interval(c), "enough": c["enough"]}
        for t, row in enumerate(cells_in) for u, c in enumerate(row) if c is not None])
    y_numbers, x_numbers = list(range(1, rows + 1)), [task_no(u) for u in cols]
    # the rows of update tasks are labelled as such ("3 (update)"); json.dumps quotes the text safely
    updates = json.dumps([task_no(t) for t, kind in enumerate(report["kinds"]) if kind == "update"])
    update_mark = json.dumps(f" ({ctx.t('hi.kind.update')})", ensure_ascii=False)
    base = alt.Chart(cells).encode(
        x=alt.X("evaluated:O", title=ctx.t("hi.evaluated"), sort=x_numbers, scale=alt.Scale(domain=x_numbers),
                axis=alt.Axis(labelAngle=0, orient="top")),
        y=alt.Y("trained:O", title=ctx.t("hi.trained"), sort=y_numbers, scale=alt.Scale(domain=y_numbers),
                axis=alt.Axis(labelExpr=f"indexof({updates}, datum.value) >= 0 ? datum.label + {update_mark} "
                                        ": datum.label")))
    tooltip = [alt.Tooltip("trained:O", title=ctx.t("hi.trained")),
               alt.Tooltip("evaluated:O", title=ctx.t("hi.evaluated")),
               alt.Tooltip("value:Q", title=value_title, format=".1f"),
               alt.Tooltip("right:Q", title=ctx.t("hi.right")), alt.Tooltip("n:Q", title=ctx.t("hi.images")),
               alt.Tooltip("interval:N", title=ctx.t("hi.ci"))]
    heat = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("value:Q", title=value_title, scale=alt.Scale(domain=[0, 100], scheme="viridis")),
        tooltip=tooltip)
    # a cell resting on too few images: grey, no percentage (its count is in the tooltip and below)
    few = base.transform_filter("!datum.enough").mark_rect(stroke="white", strokeWidth=1, color="#d9d9d9").encode(
        tooltip=tooltip)
    font = max(8, min(13, cell // 3))
    big = cell >= 40
    text = base.transform_filter("datum.enough").mark_text(baseline="middle", fontSize=font,
                                                          dy=-font // 2 if big else 0).encode(
        text=alt.Text("value:Q", format=".0f" if cell < 34 else ".1f"),
        color=alt.condition(alt.datum.value > 55, alt.value("black"), alt.value("white")),  # readable on viridis
        tooltip=tooltip)
    layers = heat + few + text
    if big:   # room for a second line: how many images the number rests on
        layers += base.mark_text(baseline="middle", fontSize=max(8, font - 3), dy=font // 2 + 2).encode(
            text="n_text:N", color=alt.condition("datum.value > 55 || !datum.enough", alt.value("black"),
                                                 alt.value("white")),
            tooltip=tooltip)
    # "pad": width and height are the plot's own (square cells); the axes and legend come on top.
    return layers.properties(width=cell * len(cols), height=cell * rows,
                             autosize=alt.AutoSizeParams(type="pad", contains="padding"))


def _cell_text(c: dict | None) -> str:
    if c is None:
        return ""
    if not c["enough"]:
        return ctx.t("hi.cell_few", correct=c["correct"], n=c["n"])
    return ctx.t("hi.cell", acc=pct(c["acc"]), correct=c["correct"], n=c["n"], low=f"{100 * c['low']:.0f}",
                 high=f"{100 * c['high']:.0f}")


def _matrix_table(report: dict, matrix: list[list[float]], with_counts: bool = False) -> pd.DataFrame:
    """Rows: the model after each task; columns: the new-class tasks. ``with_counts``: each accuracy
    with the images it rests on and its 95 % interval (the cells of ``report["cells"]``)."""
    cols = _new_columns(report)
    rows = []
    for t, row in enumerate(matrix):
        if with_counts:
            cells = report["cells"][t]
            rows.append([_cell_text(cells[u]) if u < len(cells) else "" for u in cols])
        else:
            rows.append([pct(row[u]) if u < len(row) else "" for u in cols])
    return pd.DataFrame(rows, index=[_row_title(report, t) for t in range(len(matrix))],
                        columns=[ctx.t("hi.task_n", n=task_no(u)) for u in cols])


def _forgetting(report: dict, key: str) -> None:
    """Per earlier task, a line from its best accuracy (hollow dot) to its accuracy now (filled dot) on
    a fixed 0–100 % axis, one row per task with its numbers beside it: a large drop is a long red line,
    and no label can overlap another."""
    rows = report["forgetting"]
    if not rows:
        return
    st.markdown(f"**{ctx.t('hi.forgetting_per_task')}**")
    st.caption(ctx.t("hi.forgetting_chart_help"))
    tasks = [ctx.t("hi.task_n", n=task_no(r["task"])) for r in rows]
    points = []
    for r, name in zip(rows, tasks):
        common = {"task": task_no(r["task"]), "name": name, "drop": 100 * r["drop"], "best": 100 * r["best"],
                  "now": 100 * r["now"], "best_after": ctx.t("hi.after_task", n=task_no(r["best_after"])),
                  "text": f"{100 * r['best']:.1f} → {100 * r['now']:.1f} ({round(-100 * r['drop'], 1) + 0.0:+.1f})",
                  "lost": r["drop"] > 0.0005}
        points.append({**common, "point": ctx.t("hi.best"), "acc": 100 * r["best"], "filled": False})
        points.append({**common, "point": ctx.t("hi.now"), "acc": 100 * r["now"], "filled": True})
    frame = pd.DataFrame(points)
    height = alt.Step(max(22, min(36, 420 // len(rows))))
    y = alt.Y("name:N", title=None, sort=tasks)
    tooltip = [alt.Tooltip("name:N", title=ctx.t("hi.task")),
               alt.Tooltip("best:Q", title=ctx.t("hi.best"), format=".1f"),
               alt.Tooltip("best_after:N", title=ctx.t("hi.best_when")),
               alt.Tooltip("now:Q", title=ctx.t("hi.now"), format=".1f"),
               alt.Tooltip("drop:Q", title=ctx.t("hi.drop"), format=".1f")]
    base = alt.Chart(frame).encode(y=y)
    line = base.mark_line(strokeWidth=3).encode(
        x=alt.X("acc:Q", title=ctx.t("hi.accuracy"), scale=alt.Scale(domain=[0, 100]),
                axis=alt.Axis(format="d", values=list(range(0, 101, 20)))),
        detail="name:N",
        color=alt.condition(alt.datum.lost, alt.value("#d62728"), alt.value("#2ca02c")), tooltip=tooltip)
    dots = base.mark_point(size=80, strokeWidth=2).encode(
        x="acc:Q", shape=alt.Shape("point:N", title=ctx.t("hi.point"), sort=[ctx.t("hi.best"), ctx.t("hi.now")]),
        fill=alt.condition(alt.datum.filled, alt.value("#333333"), alt.value("white")),
        color=alt.value("#333333"), tooltip=tooltip)
    numbers = alt.Chart(frame[frame["filled"]]).mark_text(align="left", fontSize=12).encode(
        y=alt.Y("name:N", title=None, sort=tasks, axis=None), text="text:N", tooltip=tooltip)
    chart = alt.hconcat((line + dots).properties(width=360, height=height),
                        numbers.properties(width=150, height=height), spacing=4)
    st.altair_chart(chart, width="content")
    worst = max(rows, key=lambda r: r["drop"])
    if worst["drop"] > 0:
        st.caption(ctx.t("hi.worst", task=task_no(worst["task"]), best=f"{100 * worst['best']:.1f}",
                         after=task_no(worst["best_after"]), now=f"{100 * worst['now']:.1f}",
                         drop=f"{100 * worst['drop']:.1f}",
                         mean=f"{100 * report['summary']['forgetting']:.1f}"))


def _latest_model(report: dict, key: str) -> None:
    """Per-class accuracy of the latest model with its images and interval ("too few images to evaluate"
    below the minimum), and its confusion matrix."""
    n_tasks = len(report["tasks"])
    st.markdown(f"**{ctx.t('hi.per_class', n=task_no(n_tasks - 1))}**")
    latest = report["latest"]
    if latest is None:
        st.caption(ctx.t("hi.per_class_none"))
        return
    st.dataframe(pd.DataFrame([{
        ctx.t("hi.col.class"): label_text(c, ctx.lang),
        ctx.t("hi.images"): c["n"], ctx.t("hi.right"): c["correct"],
        ctx.t("hi.col.accuracy"): pct(c["acc"]) if c["enough"] else
        ctx.t("hi.too_few", n=c["n"], min=report["eval_min"]),
        ctx.t("hi.ci"): _interval(c) if c["enough"] else ""} for c in latest["classes"]]),
        hide_index=True, key=f"hi_classes_{key}")
    names = [label_text(c, ctx.lang) for c in latest["classes"]]
    st.markdown(f"**{ctx.t('hi.confusion')}**")
    st.caption(ctx.t("hi.confusion_help"))
    frame = pd.DataFrame([{"true": names[i], "chosen": names[j], "count": count,
                           "share": count / max(1, sum(row)), "right": i == j}
                          for i, row in enumerate(latest["confusion"]) for j, count in enumerate(row)])
    cell = _cell(len(names), 18, 44, room=560)
    base = alt.Chart(frame).encode(
        x=alt.X("chosen:N", title=ctx.t("hi.predicted"), sort=names,
                axis=alt.Axis(labelAngle=-45, labelAlign="right", labelLimit=120, labelOverlap=False)),
        y=alt.Y("true:N", title=ctx.t("hi.true_class"), sort=names, axis=alt.Axis(labelLimit=140)))
    tooltip = [alt.Tooltip("true:N", title=ctx.t("hi.true_class")), alt.Tooltip("chosen:N", title=ctx.t("hi.predicted")),
               alt.Tooltip("count:Q", title=ctx.t("hi.images"))]
    heat = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.Color("share:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"), legend=None), tooltip=tooltip)
    text = base.transform_filter(alt.datum.count > 0).mark_text(fontSize=max(8, min(13, cell // 3))).encode(
        text="count:Q", color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black")),
        tooltip=tooltip)
    st.altair_chart((heat + text).properties(width=cell * len(names), height=cell * len(names),
                                             autosize=alt.AutoSizeParams(type="pad", contains="padding")),
                    width="content")


def show_run(run: dict, key: str) -> None:
    report = _report(store, str(store.home), run["id"], revision)
    run = report["run"]
    st.caption(ctx.md("hi.run_line", method=method_title(run["config"].get("method", "both"), ctx.lang),
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
    pooled = report["last_pooled"]
    if pooled and pooled["n"]:
        st.caption(ctx.t("hi.last_images", n=pooled["n"], correct=pooled["correct"],
                         low=f"{100 * pooled['low']:.1f}", high=f"{100 * pooled['high']:.1f}"))
    if summary:
        _forgetting(report, key)

    st.markdown(f"**{ctx.t('hi.matrix')}**")
    from core.settings import SPECS

    st.caption(ctx.t("hi.matrix_help", min=report["eval_min"], setting=SPECS["eval_min_holdout_images"].name(ctx.lang)))
    st.altair_chart(_matrix_chart(report, ctx.t("hi.accuracy")), width="content")
    # The same numbers as a table, each with its images and interval: readable without the chart.
    st.dataframe(_matrix_table(report, acc, with_counts=True), key=f"hi_matrix_{key}")
    _latest_model(report, key)

    rejected = report["rejected"]
    st.markdown(f"**{ctx.t('hi.rejected')}**")
    if any(_finite(v) for row in rejected for v in row):
        st.caption(ctx.t("hi.rejected_help"))
        st.dataframe(_matrix_table(report, rejected), key=f"hi_rejected_{key}")
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
        ctx.t("hi.task"): task_no(t["idx"]), ctx.t("hi.col.kind"): ctx.t(f"hi.kind.{t['kind']}"),
        ctx.t("hi.col.classes"): len(t["label_ids"]),
        ctx.t("hi.col.labels"): join([label_text(l, ctx.lang) for l in t["labels"]], ctx.lang),
        ctx.t("hi.task_aware"): pct(report["acc_task_aware"][t["idx"]][t["idx"]]),   # NaN (—) for an update
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
        st.subheader(md(_run_label(run)))
        show_run(run, "a")
    with right:
        st.subheader(md(_run_label(other)))
        show_run(other, "b")
else:
    show_run(run, "a")
