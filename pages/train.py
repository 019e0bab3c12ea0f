"""Train: create a run (its method and configuration), compose the next task, start it, and watch it
learn. All state lives in the database, so a reload or another browser sees the same job; the live
part redraws the whole page as soon as anything it depends on changed (a task finished or was
cancelled, a label was approved), so "next task" and the choosable labels are never stale.

Tasks are numbered from 1 here (the database counts from 0)."""
from __future__ import annotations

import dataclasses
import math

import altair as alt
import pandas as pd
import streamlit as st

from core import jobs, runs
from core.i18n import UserError
from core.run_report import config_changes, data_revision
from core.sg.learner import LearnerConfig
from pages.ui import md, page_context, run_action
from pages.views import (changes_text, config_rows, config_value, encoder_text, field_title, label_text, local_time,
                         loss_title, method_help, method_title, product_methods, reason_text, run_text, status_title,
                         task_no)

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("tr.title"))
# What this full run of the page was computed from; the live fragment reruns the page when it moves.
REVISION_KEY = "tr_revision"
st.session_state[REVISION_KEY] = data_revision(store)

# Shown first; the rest of a configuration sits in "Advanced".
MAIN_FIELDS = ("method", "epochs", "lr", "batch_size")


def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


# ---- worker status -----------------------------------------------------------------------------------
from core.worker import ensure_worker, live_workers  # noqa: E402

alive = live_workers(store)
if alive:
    st.caption(ctx.md("tr.worker_alive", workers=", ".join(f"{w['device']} @ {w['host']}" for w in alive)))
else:
    st.warning(ctx.t("tr.worker_none"))
    if actor.can("train.request") and st.button(ctx.t("tr.worker_start"), key="tr_worker_start"):
        ensure_worker(store)
        st.toast(ctx.t("tr.worker_started"))


# ---- configuration inputs, from LearnerConfig's own declaration -----------------------------------------
def _step(value) -> float:
    """A step one decimal below the value's magnitude (lr 0.01 → 0.001, κ 22 → 1)."""
    if not value:
        return 0.01
    return 10.0 ** (math.floor(math.log10(abs(float(value)))) - 1) if abs(float(value)) < 10 else 1.0


def _field_input(name: str, field: dataclasses.Field, default, key: str, box):
    """One LearnerConfig field as a widget with the bounds or choices its metadata declares."""
    meta, label = field.metadata, field_title(name, ctx.lang)
    help_text = ctx.t(f"cfg.{name}.help") if name in HELPED else None
    if "choices" in meta:
        choices = product_methods() if meta["choices"] == "methods" else list(meta["choices"])
        if default not in choices:      # e.g. a run made with a method the Train page no longer offers
            choices = [default, *choices]
        return box.selectbox(label, choices, index=choices.index(default), key=key, help=help_text,
                             format_func=lambda v: config_value(name, v, ctx.lang))
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    if "bool" in kind:
        return box.checkbox(label, value=bool(default), key=key, help=help_text)
    low, high = meta.get("min"), meta.get("max")
    if "int" in kind:
        return box.number_input(label, min_value=int(low), max_value=int(high), step=1, key=key, help=help_text,
                                 value=None if default is None else int(default))
    return box.number_input(label, min_value=float(low), max_value=float(high), format="%g", key=key,
                            step=_step(default), help=help_text, value=None if default is None else float(default))


HELPED = ("softness", "T", "lambda_sl", "lambda_kd", "logit_scale", "trainable_blocks", "memory_total",
          "feature_views", "exemplars_per_class")


def _config_inputs(defaults: dict, prefix: str, scope: str) -> dict:
    """Inputs for the fields a user may set at ``scope`` ("run": creating a run; "task": one task)."""
    fields = LearnerConfig.user_fields(scope)
    values = {}
    main = [n for n in MAIN_FIELDS if n in fields]
    for name, col in zip(main, st.columns(len(main))):
        values[name] = _field_input(name, fields[name], defaults.get(name), f"{prefix}_{name}", col)
        if name == "method":
            col.caption(method_help(values[name], ctx.lang))
    with st.expander(ctx.t("tr.advanced")):
        rest = [n for n in fields if n not in MAIN_FIELDS]
        for start in range(0, len(rest), 4):
            for name, col in zip(rest[start:start + 4], st.columns(4)):
                values[name] = _field_input(name, fields[name], defaults.get(name), f"{prefix}_{name}", col)
    return values


# ---- run selection / creation ------------------------------------------------------------------------
def _run_label(r: dict) -> str:
    return run_text(r, ctx.lang)


all_runs = [r for r in runs.list_runs(store) if r["status"] == "active"]
run = None
if all_runs:
    run = st.selectbox(ctx.t("tr.run"), all_runs, key="tr_run", format_func=_run_label)
else:
    st.info(ctx.t("tr.no_runs"))

if actor.can("train.request"):
    with st.expander(ctx.t("tr.new_run"), expanded=not all_runs):
        from core.encoders import active_encoder_spec

        spec = active_encoder_spec(store)
        st.caption(ctx.md("tr.encoder_active", encoder=encoder_text(spec, ctx.lang)))
        run_name = st.text_input(ctx.t("tr.run_name"), key="tr_new_name")
        new_config = _config_inputs(vars(runs.default_config(spec)), "tr_new", "run")
        if st.button(ctx.t("tr.create"), key="tr_create"):
            created = run_action(ctx, runs.create_run, store, actor, run_name, config=new_config)
            if created:
                st.toast(ctx.md("tr.created", name=created["name"]))
                st.rerun()
else:
    st.info(ctx.t("tr.readonly"))

if run is None:
    st.stop()

st.caption(ctx.md("tr.run_line", method=method_title(run["config"].get("method", "both"), ctx.lang),
                 encoder=encoder_text(run["encoder"], ctx.lang)))
with st.expander(ctx.t("tr.config")):
    st.table(pd.DataFrame(config_rows(run["config"], ctx.lang)).rename(
        columns={"setting": ctx.t("col.setting"), "value": ctx.t("col.value")}).set_index(ctx.t("col.setting")))


# ---- next task ---------------------------------------------------------------------------------------
def _new_choice(n_updatable: int) -> list[dict]:
    """Labels for a task of new classes, the ones that cannot join with their reason, and the SG-RL
    soft-label preview of the chosen ones."""
    labels = runs.label_eligibility(store, run["id"])
    eligible = [l for l in labels if l["eligible"]]
    blocked = [l for l in labels if not l["eligible"]]
    if eligible:
        chosen = st.multiselect(ctx.t("tr.labels"), eligible, key=f"tr_labels_{run['id']}", placeholder=ctx.t("ui.choose"),
                                format_func=lambda l: ctx.t("tr.label_option", label=label_text(l, ctx.lang),
                                                            n_train=l["n_train"], n_holdout=l["n_holdout"]))
    else:
        chosen = []
        st.info(ctx.t("tr.none_eligible"))
    if n_updatable:
        st.info(ctx.t("tr.update_hint", n=n_updatable))
    if blocked:
        with st.expander(ctx.t("tr.ineligible", n=len(blocked))):
            st.dataframe(pd.DataFrame([{ctx.t("col.name"): l["name"], ctx.t("col.canonical"): l["canonical"],
                                        ctx.t("col.status"): status_title(l["status"], ctx.lang),
                                        ctx.t("tr.col.reason"): reason_text(l["reason"], ctx.lang)}
                                       for l in blocked]), hide_index=True)
    if chosen:
        _preview(chosen)
    return chosen


def _update_choice(updatable: list[dict]) -> list[dict]:
    """Trained classes of this run with new train images (an update task), and the others with why."""
    st.caption(ctx.t("tr.update_help"))
    eligible = [l for l in updatable if l["eligible"]]
    blocked = [l for l in updatable if not l["eligible"]]
    chosen = []
    if eligible:
        chosen = st.multiselect(ctx.t("tr.update_labels"), eligible, key=f"tr_update_{run['id']}",
                                placeholder=ctx.t("ui.choose"),
                                format_func=lambda l: ctx.t("tr.update_option", label=label_text(l, ctx.lang),
                                                            n=l["n_new"]))
    else:
        st.info(ctx.t("tr.update_none"))
    if blocked:
        with st.expander(ctx.t("tr.not_updatable", n=len(blocked))):
            st.dataframe(pd.DataFrame([{ctx.t("col.name"): l["name"], ctx.t("col.canonical"): l["canonical"],
                                        ctx.t("tr.col.new_images"): l["n_new"],
                                        ctx.t("tr.col.reason"): reason_text(l["reason"], ctx.lang)}
                                       for l in blocked]), hide_index=True)
    return chosen


def _preview(chosen: list[dict]) -> None:
    """What SG-RL will use for the chosen new labels: their nearest trained classes and soft weights."""
    st.markdown(f"**{ctx.t('tr.preview')}**")
    try:
        preview = runs.soft_label_preview(store, run["id"], [l["id"] for l in chosen])
    except UserError as err:
        st.caption(ctx.md("tr.preview_failed", reason=err.message(ctx.lang)))
    except Exception as exc:  # the encoder may be unavailable; composing a task must still work
        st.caption(ctx.md("tr.preview_failed", reason=str(exc)))
    else:
        if not any(p["neighbours"] for p in preview):
            st.caption(ctx.t("tr.preview_first"))
        else:
            st.dataframe(pd.DataFrame([
                {ctx.t("tr.col.label"): p["name"], ctx.t("tr.col.self"): round(p["self_weight"], 3),
                 ctx.t("tr.col.neighbour"): n["name"], ctx.t("tr.col.cosine"): round(n["cosine"], 3),
                 ctx.t("tr.col.weight"): round(n["soft_weight"], 3)}
                for p in preview for n in p["neighbours"]]), hide_index=True)


if actor.can("train.request"):
    tasks = runs.list_tasks(store, run["id"], runs.ACTIVE_TASK_STATUSES)
    next_idx = max((t["idx"] for t in tasks), default=-1) + 1
    st.subheader(ctx.t("tr.next_task", idx=task_no(next_idx)))
    updatable = runs.update_eligibility(store, run["id"])
    mode = st.radio(ctx.t("tr.mode"), ["new", "update"], horizontal=True, key=f"tr_mode_{run['id']}",
                    format_func=lambda m: ctx.t(f"tr.mode.{m}"))
    if mode == "update":
        chosen = _update_choice(updatable)
    else:
        chosen = _new_choice(sum(1 for l in updatable if l["eligible"]))
    st.caption(ctx.t("tr.task_config_help"))
    overrides = _config_inputs(run["config"], f"tr_task_{run['id']}", "task")
    changed = {k: v for k, v in overrides.items() if run["config"].get(k) != v}
    if st.button(ctx.t("tr.start_update" if mode == "update" else "tr.start"), type="primary", disabled=not chosen,
                 key="tr_start"):
        queued = run_action(ctx, runs.request_task, store, actor, run["id"], [l["id"] for l in chosen], changed,
                            kind=mode)
        if queued:
            ensure_worker(store)
            st.toast(ctx.t("tr.started", idx=task_no(queued["task"]["idx"]), job=queued["job_id"]))
            st.rerun()


# ---- live progress -----------------------------------------------------------------------------------
def _loss_chart(curve: list[dict]) -> alt.Chart:
    frame = pd.DataFrame(curve).melt(id_vars=["step", "epoch"], var_name="term", value_name="value").dropna()
    frame["term"] = frame["term"].map(lambda term: loss_title(term, ctx.lang))
    return alt.Chart(frame).mark_line().encode(
        x=alt.X("step:Q", title=ctx.t("tr.step")), y=alt.Y("value:Q", title=ctx.t("tr.loss")),
        color=alt.Color("term:N", title=ctx.t("tr.loss_term")),
        tooltip=[alt.Tooltip("step:Q", title=ctx.t("tr.step")), alt.Tooltip("epoch:Q", title=ctx.t("tr.epoch")),
                 alt.Tooltip("term:N", title=ctx.t("tr.loss_term")),
                 alt.Tooltip("value:Q", title=ctx.t("tr.loss"), format=".4f")])


@st.fragment(run_every=2)
def live_progress(run_id: int) -> None:
    _draw_progress(run_id)
    if data_revision(store) != st.session_state.get(REVISION_KEY):
        # A job was claimed, finished or cancelled, or a label changed: the "next task" header and the
        # choosable labels above this fragment were computed from older data. Redraw the whole page —
        # after this run handled its own buttons: a rerun before them would drop a Cancel click.
        st.rerun()


def _draw_progress(run_id: int) -> None:
    st.subheader(ctx.t("tr.progress"))
    job = runs.active_job(store, run_id)
    if job is None:
        st.caption(ctx.t("tr.idle"))
    else:
        detail = job["detail"]
        st.markdown(ctx.t("tr.job_line", id=job["id"], task=task_no(job["payload"].get("task_idx", 0)),
                          status=ctx.t(f"jobs.status.{job['status']}")))
        st.progress(float(job["progress"]), text=md(jobs.render_message(job["message"], ctx.lang)) or None)
        bits = []
        if detail.get("device"):
            bits.append(ctx.t("tr.device", device=detail["device"]))
        if detail.get("images_per_s"):
            bits.append(ctx.t("tr.speed", speed=detail["images_per_s"]))
        if detail.get("eta_s") is not None:
            bits.append(ctx.t("tr.eta", eta=_fmt_seconds(detail["eta_s"])))
        if bits:
            st.caption(" · ".join(bits))
        curve = detail.get("curve") or []
        if curve:
            st.altair_chart(_loss_chart(curve), width="stretch")
        if job["cancel_requested"]:
            st.caption(ctx.t("tr.cancel_sent"))
        elif actor.can("job.cancel"):
            if st.button(ctx.t("tr.cancel"), key=f"tr_cancel_{job['id']}"):
                if run_action(ctx, jobs.cancel, store, actor, job["id"]):
                    st.toast(ctx.t("tr.cancel_sent"))
                    st.rerun()          # a queued job is cancelled at once: the next task is free again
    recent = jobs.list_jobs(store, run_id=run_id, limit=20)
    if recent:
        run_config = runs.get_run(store, run_id)["config"]
        task_configs = {t["idx"]: t.get("config") or {} for t in runs.list_tasks(store, run_id)}
        st.markdown(f"**{ctx.t('tr.recent')}**")
        st.dataframe(pd.DataFrame([{
            ctx.t("tr.col.job"): j["id"], ctx.t("tr.col.task"): task_no(j["payload"].get("task_idx", 0)),
            ctx.t("tr.col.status"): ctx.t(f"jobs.status.{j['status']}"),
            ctx.t("tr.col.message"): jobs.render_message(j["message"], ctx.lang),
            ctx.t("tr.col.attempts"): j["attempts"], ctx.t("tr.col.by"): j["created_by"],
            ctx.t("tr.col.at"): local_time(store, j["created_at"], ctx.lang),
            # the effective configuration of the task as it stands (a retried task keeps its row)
            ctx.t("hi.col.config"): changes_text(config_changes(
                run_config, task_configs.get(j["payload"].get("task_idx"), {})), ctx.lang)} for j in recent]),
            hide_index=True)
        for j in recent:
            if j["status"] == "failed" and j["error"]:
                with st.expander(ctx.t("tr.error", id=j["id"])):
                    st.code(j["error"])
                break


live_progress(run["id"])
