"""Train: compose the next task of a run, start it, and watch it learn (all state lives in the DB, so
a reload or another browser sees the same job)."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core import jobs, runs
from core.i18n import UserError
from pages.ui import page_context, run_action

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("tr.title"))


def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds < 3600 else f"{seconds // 3600}h{seconds % 3600 // 60:02d}"


# ---- worker status -----------------------------------------------------------------------------------
from core.worker import ensure_worker, live_workers  # noqa: E402

alive = live_workers(store)
if alive:
    st.caption(ctx.t("tr.worker_alive", workers=", ".join(f"{w['device']} @ {w['host']}" for w in alive)))
else:
    st.warning(ctx.t("tr.worker_none"))
    if actor.can("train.request") and st.button(ctx.t("tr.worker_start"), key="tr_worker_start"):
        ensure_worker(store)
        st.toast(ctx.t("tr.worker_started"))


# ---- run selection / creation ------------------------------------------------------------------------
def _config_inputs(defaults: dict, prefix: str, with_exemplars: bool) -> dict:
    c1, c2, c3 = st.columns(3)
    values = {
        "epochs": c1.number_input(ctx.t("tr.epochs"), 1, 1000, int(defaults["epochs"]), key=f"{prefix}_epochs"),
        "lr": c2.number_input(ctx.t("tr.lr"), 1e-6, 10.0, float(defaults["lr"]), format="%.4f", key=f"{prefix}_lr"),
        "batch_size": c3.number_input(ctx.t("tr.batch"), 1, 4096, int(defaults["batch_size"]), key=f"{prefix}_batch"),
    }
    with st.expander(ctx.t("tr.advanced")):
        a1, a2, a3, a4 = st.columns(4)
        values["softness"] = a1.number_input(ctx.t("tr.softness"), 0.0, 500.0, float(defaults["softness"]),
                                             key=f"{prefix}_softness")
        values["T"] = a2.number_input(ctx.t("tr.T"), 0.1, 100.0, float(defaults["T"]), key=f"{prefix}_T")
        values["lambda_sl"] = a3.number_input(ctx.t("tr.lambda_sl"), 0.0, 100.0, float(defaults["lambda_sl"]),
                                              key=f"{prefix}_lsl")
        values["lambda_kd"] = a4.number_input(ctx.t("tr.lambda_kd"), 0.0, 100.0, float(defaults["lambda_kd"]),
                                              key=f"{prefix}_lkd")
        if with_exemplars:
            values["exemplars_per_class"] = st.number_input(
                ctx.t("tr.exemplars"), 0, 10000, int(defaults["exemplars_per_class"]), key=f"{prefix}_exemplars")
    return values


all_runs = [r for r in runs.list_runs(store) if r["status"] == "active"]
run = None
if all_runs:
    run = st.selectbox(ctx.t("tr.run"), all_runs, key="tr_run",
                       format_func=lambda r: f"#{r['id']} {r['name']} ({r['encoder']})")
else:
    st.info(ctx.t("tr.no_runs"))

if actor.can("train.request"):
    with st.expander(ctx.t("tr.new_run"), expanded=not all_runs):
        from core.encoders import active_encoder_spec

        spec = active_encoder_spec(store)
        st.caption(ctx.t("tr.encoder", spec=spec))
        run_name = st.text_input(ctx.t("tr.run_name"), key="tr_new_name")
        new_config = _config_inputs(vars(runs.default_config(spec)), "tr_new", with_exemplars=True)
        if st.button(ctx.t("tr.create"), key="tr_create"):
            created = run_action(ctx, runs.create_run, store, actor, run_name, config=new_config)
            if created:
                st.toast(ctx.t("tr.created", name=created["name"]))
                st.rerun()
else:
    st.info(ctx.t("tr.readonly"))

if run is None:
    st.stop()

st.caption(ctx.t("tr.encoder", spec=run["encoder"]))
with st.expander(ctx.t("tr.config")):
    st.json(run["config"])


# ---- next task ---------------------------------------------------------------------------------------
if actor.can("train.request"):
    tasks = runs.list_tasks(store, run["id"], runs.ACTIVE_TASK_STATUSES)
    next_idx = max((t["idx"] for t in tasks), default=-1) + 1
    st.subheader(ctx.t("tr.next_task", idx=next_idx))
    labels = runs.label_eligibility(store, run["id"])
    eligible = [l for l in labels if l["eligible"]]
    blocked = [l for l in labels if not l["eligible"]]
    if eligible:
        chosen = st.multiselect(ctx.t("tr.labels"), eligible, key=f"tr_labels_{run['id']}", placeholder=ctx.t("ui.choose"),
                                format_func=lambda l: f"{l['canonical']}（{l['name']}）· {l['n_train']}+{l['n_holdout']}")
    else:
        chosen = []
        st.info(ctx.t("tr.none_eligible"))
    if blocked:
        with st.expander(ctx.t("tr.ineligible", n=len(blocked))):
            st.dataframe(pd.DataFrame([{ctx.t("col.name"): l["name"], ctx.t("col.canonical"): l["canonical"],
                                        ctx.t("col.status"): ctx.t(f"status.{l['status']}"),
                                        ctx.t("tr.col.reason"): ctx.t(l["reason"][0], **l["reason"][1])}
                                       for l in blocked]), hide_index=True)
    if chosen:
        st.markdown(f"**{ctx.t('tr.preview')}**")
        try:
            preview = runs.soft_label_preview(store, run["id"], [l["id"] for l in chosen])
        except UserError as err:
            st.caption(ctx.t("tr.preview_failed", reason=err.message(ctx.lang)))
        except Exception as exc:  # the encoder may be unavailable; composing a task must still work
            st.caption(ctx.t("tr.preview_failed", reason=str(exc)))
        else:
            if not any(p["neighbours"] for p in preview):
                st.caption(ctx.t("tr.preview_first"))
            else:
                st.dataframe(pd.DataFrame([
                    {ctx.t("tr.col.label"): p["name"], ctx.t("tr.col.self"): round(p["self_weight"], 3),
                     ctx.t("tr.col.neighbour"): n["name"], ctx.t("tr.col.cosine"): round(n["cosine"], 3),
                     ctx.t("tr.col.weight"): round(n["soft_weight"], 3)}
                    for p in preview for n in p["neighbours"]]), hide_index=True)
    overrides = _config_inputs(run["config"], f"tr_task_{run['id']}", with_exemplars=False)
    changed = {k: v for k, v in overrides.items() if run["config"].get(k) != v}
    if st.button(ctx.t("tr.start"), type="primary", disabled=not chosen, key="tr_start"):
        queued = run_action(ctx, runs.request_task, store, actor, run["id"], [l["id"] for l in chosen], changed)
        if queued:
            ensure_worker(store)
            st.toast(ctx.t("tr.started", idx=queued["task"]["idx"], job=queued["job_id"]))
            st.rerun()


# ---- live progress -----------------------------------------------------------------------------------
@st.fragment(run_every=2)
def live_progress(run_id: int) -> None:
    st.subheader(ctx.t("tr.progress"))
    job = runs.active_job(store, run_id)
    if job is None:
        st.caption(ctx.t("tr.idle"))
    else:
        detail = job["detail"]
        st.markdown(ctx.t("tr.job_line", id=job["id"], task=job["payload"].get("task_idx"),
                          status=ctx.t(f"jobs.status.{job['status']}")))
        st.progress(float(job["progress"]), text=jobs.render_message(job["message"], ctx.lang) or None)
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
            frame = pd.DataFrame(curve).melt(id_vars=["step", "epoch"], var_name="term", value_name="value")
            chart = alt.Chart(frame).mark_line().encode(
                x=alt.X("step:Q", title=ctx.t("tr.step")), y=alt.Y("value:Q", title=ctx.t("tr.loss")),
                color=alt.Color("term:N", title=ctx.t("tr.loss")), tooltip=["step", "epoch", "term", "value"])
            st.altair_chart(chart, width="stretch")
        if actor.can("job.cancel") and not job["cancel_requested"]:
            if st.button(ctx.t("tr.cancel"), key=f"tr_cancel_{job['id']}"):
                if run_action(ctx, jobs.cancel, store, actor, job["id"]):
                    st.toast(ctx.t("tr.cancel_sent"))
    recent = jobs.list_jobs(store, run_id=run_id, limit=20)
    if recent:
        st.markdown(f"**{ctx.t('tr.recent')}**")
        st.dataframe(pd.DataFrame([{
            ctx.t("tr.col.job"): j["id"], ctx.t("tr.col.task"): j["payload"].get("task_idx"),
            ctx.t("tr.col.status"): ctx.t(f"jobs.status.{j['status']}"),
            ctx.t("tr.col.message"): jobs.render_message(j["message"], ctx.lang),
            ctx.t("tr.col.attempts"): j["attempts"], ctx.t("tr.col.by"): j["created_by"]} for j in recent]),
            hide_index=True)
        for j in recent:
            if j["status"] == "failed" and j["error"]:
                with st.expander(ctx.t("tr.error", id=j["id"])):
                    st.code(j["error"])
                break


live_progress(run["id"])
