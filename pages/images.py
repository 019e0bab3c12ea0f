"""Images: per-label counts, upload (files and zips), thumbnails, move/delete, dataset export."""
from __future__ import annotations

import time

import altair as alt
import pandas as pd
import streamlit as st

from core import features, images, timefmt
from core.i18n import UserError
from core import labels as label_service

from pages.ui import md, page_context, run_action
from pages.uploads import localise_uploader, upload_caps
from pages.views import human_bytes, lang_key

PAGE_SIZE = 24
SPLITS = ("train", "holdout")
SPLIT_COLOURS = {"train": "#4c78a8", "holdout": "#f58518"}
GRID_COLUMNS = 6

@st.cache_data(show_spinner=False, max_entries=5000)
def thumbnail_bytes(_store, home: str, sha256: str, path: str) -> bytes:
    """Thumbnails are cached on disk (cache/thumbs/) and in memory; ``home`` keys the memory cache."""
    row = {"sha256": sha256, "path": path}
    return images.thumbnail_path(_store, row).read_bytes()


@st.cache_data(show_spinner=False, ttl=60, max_entries=8)
def feature_cache_usage(_store, home: str) -> dict:
    """The frozen-feature cache's disk use (a walk over its files, so at most once a minute)."""
    return features.disk_usage(_store)


ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("ip.title"))

open_labels = label_service.list_labels(store, images.OPEN_STATUSES)
if not open_labels:
    st.info(ctx.t("ip.no_labels"))
    st.stop()
names = {lab["id"]: lab["name"] for lab in open_labels}

# ---- counts ------------------------------------------------------------------------------------
st.subheader(ctx.t("ip.counts"))
counts = images.label_counts(store)
ready = images.readiness(store, [c["label_id"] for c in counts])
table = pd.DataFrame([{
    ctx.t("ip.label"): c["name"],
    ctx.t("split.train"): c["n_train"],
    ctx.t("split.holdout"): c["n_holdout"],
    ctx.t("ip.ready"): "✓" if ready[c["label_id"]].ok else "—",  # a glyph every font has
    ctx.t("ip.missing"): "" if ready[c["label_id"]].ok else ctx.t(
        "ip.missing_text", train=ready[c["label_id"]].missing_train, holdout=ready[c["label_id"]].missing_holdout),
} for c in counts])
long = pd.DataFrame([{"label": c["name"], "split": ctx.t(f"split.{split}"), "n": c[f"n_{split}"]}
                     for c in counts for split in SPLITS])
chart = alt.Chart(long).mark_bar().encode(
    x=alt.X("n:Q", title=ctx.t("ip.count"), axis=alt.Axis(tickMinStep=1, format="d")),  # whole images
    y=alt.Y("label:N", title=ctx.t("ip.label"), sort=None),
    # one colour per split, whatever its translated name sorts as (学習/評価 vs train/holdout)
    color=alt.Color("split:N", title=ctx.t("ip.split"),
                    scale=alt.Scale(domain=[ctx.t(f"split.{s}") for s in SPLITS], range=[SPLIT_COLOURS[s] for s in SPLITS])),
    tooltip=[alt.Tooltip("label:N", title=ctx.t("ip.label")), alt.Tooltip("split:N", title=ctx.t("ip.split")),
             alt.Tooltip("n:Q", title=ctx.t("ip.count"))],
)
# chart and table one under the other: side by side the table's last column was cut off
st.altair_chart(chart, width="stretch")
st.dataframe(table, hide_index=True, width="stretch")

# ---- the frozen-feature cache on disk ----------------------------------------------------------
usage = feature_cache_usage(store, str(store.home))
if usage["entries"]:
    st.caption(ctx.t("ip.cache_usage", entries=f"{usage['entries']:,}", total=human_bytes(usage["bytes"]),
                     per_image=human_bytes(usage["per_image"])))
    if len(usage["versions"]) > 1:
        with st.expander(ctx.t("ip.cache_versions", n=len(usage["versions"]))):
            st.dataframe(pd.DataFrame([{ctx.t("ip.col.cache_version"): v["slug"], ctx.t("ip.col.entries"): v["entries"],
                                        ctx.t("ip.col.size"): human_bytes(v["bytes"]),
                                        ctx.t("ip.col.per_image"): human_bytes(v["bytes"] / v["entries"]
                                                                               if v["entries"] else 0)}
                                       for v in usage["versions"]]), hide_index=True, width="stretch")
else:
    from core.encoders import active_encoder_spec, describe

    # Only a pretrained (frozen) image prefix is cached; a tower trained from scratch has nothing to keep.
    try:
        cached_kind = describe(active_encoder_spec(store)).pretrained_image
    except UserError:
        cached_kind = True
    st.caption(ctx.t("ip.cache_empty" if cached_kind else "ip.cache_unused"))

# ---- one label: readiness and upload -----------------------------------------------------------
label = st.selectbox(ctx.t("ip.pick"), open_labels, key=lang_key("img_label", ctx.lang),
                     format_func=lambda r: f"#{r['id']} {r['name']} ({ctx.t('status.' + r['status'])})")
label_id = label["id"]
r = ready.get(label_id) or images.readiness(store, [label_id])[label_id]
if r.ok:
    st.success(ctx.t("ip.ready_ok", train=r.n_train, holdout=r.n_holdout))
else:
    st.warning(ctx.t("ip.ready_missing", train=r.missing_train, holdout=r.missing_holdout))

if actor.can("image.upload"):
    # One uploader per kind, so each states (and the browser enforces) the admin's limit for that kind.
    caps = upload_caps(store)
    # A new key after each batch empties the uploaders so the same files are not added twice.
    upload_round = st.session_state.setdefault("img_upload_round", 0)
    st.markdown(f"**{ctx.t('ip.upload')}**")
    images_col, zips_col = st.columns(2)
    picked = images_col.file_uploader(
        ctx.t("ip.upload_images"), type=list(images.IMAGE_EXTENSIONS), accept_multiple_files=True,
        max_upload_size=caps["image"], key=f"img_upload_files_{upload_round}",
        help=ctx.t("ip.upload_images_help", mb=caps["image"],
                   mp=f"{images.setting(store, 'upload_max_pixels') / 1e6:g}"))
    zips = zips_col.file_uploader(
        ctx.t("ip.upload_zips"), type=list(images.ARCHIVE_EXTENSIONS), accept_multiple_files=True,
        max_upload_size=caps["zip"], key=f"img_upload_zips_{upload_round}",
        help=ctx.t("ip.upload_zips_help", mb=caps["zip"], n=images.setting(store, "upload_max_zip_entries")))
    localise_uploader(f"img_upload_files_{upload_round}", ctx.lang, caps["image"], images.IMAGE_EXTENSIONS)
    localise_uploader(f"img_upload_zips_{upload_round}", ctx.lang, caps["zip"], images.ARCHIVE_EXTENSIONS)
    files = [*(picked or []), *(zips or [])]
    if files and st.button(ctx.md("ip.add", name=label["name"]), type="primary", key="img_add"):
        bar = st.progress(0.0)
        started = time.perf_counter()

        def show_progress(done: int, total: int, name: str) -> None:
            bar.progress(done / total, text=ctx.md("ip.progress", done=done, total=total, name=name))

        results = run_action(ctx, images.ingest_uploads, store, actor, label_id, files, progress=show_progress)
        if results is not None:
            st.session_state["img_results"] = {
                "summary": dict(images.summarize(results), secs=time.perf_counter() - started),
                "rows": [(res.name, res.status, res.message_key, res.params) for res in results],
            }
            st.session_state["img_upload_round"] = upload_round + 1
            st.rerun()

last = st.session_state.get("img_results")
if last:
    # Stored as keys + params, so switching the language re-renders the messages.
    st.info(ctx.t("ip.summary", **last["summary"]))
    st.dataframe(pd.DataFrame([{
        ctx.t("ip.file"): name, ctx.t("ip.result"): ctx.t(f"ip.status.{status}"),
        ctx.t("ip.message"): images.IngestResult(name, status, key, params).message(ctx.lang),
    } for name, status, key, params in last["rows"]]), hide_index=True, width="stretch")

# ---- gallery -----------------------------------------------------------------------------------
total = images.count_images(store, label_id)
st.subheader(ctx.t("ip.gallery", n=total))
if total == 0:
    st.caption(ctx.t("ip.empty"))
else:
    st.caption(ctx.t("ip.times_in", zone=timefmt.zone_name(store, ctx.lang)))
    pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
    page = st.number_input(ctx.t("ip.page", pages=pages), min_value=1, max_value=pages, value=1, step=1,
                           key=f"img_page_{label_id}") if pages > 1 else 1
    rows = images.list_images(store, label_id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    can_manage = actor.can("image.manage")
    selected: list[int] = []
    for start in range(0, len(rows), GRID_COLUMNS):
        for col, row in zip(st.columns(GRID_COLUMNS), rows[start:start + GRID_COLUMNS]):
            try:
                col.image(thumbnail_bytes(store, str(store.home), row["sha256"], row["path"]),
                          caption=ctx.t("ip.caption", id=row["id"], split=ctx.t("split." + row["split"]),
                                        when=timefmt.local_time(store, row["uploaded_at"], ctx.lang)))
            except OSError:  # file missing on disk: still show the row so it can be deleted
                col.caption(f"#{row['id']} ⚠ {md(row['original_name'])}")
            if can_manage and col.checkbox(ctx.t("ip.select"), key=f"img_sel_{row['id']}"):
                selected.append(row["id"])

    if can_manage and selected:
        st.markdown(f"**{ctx.t('ip.manage', n=len(selected))}**")
        targets = [lab for lab in open_labels if lab["id"] != label_id]
        move_col, delete_col = st.columns(2)
        if targets:
            target = move_col.selectbox(ctx.t("ip.move_to"), targets, key="img_move_target",
                                        format_func=lambda r: f"#{r['id']} {r['name']}")
            if move_col.button(ctx.t("ip.move"), key="img_move"):
                moved = run_action(ctx, images.move_images, store, actor, selected, target["id"])
                if moved is not None:
                    st.toast(ctx.t("ip.moved", n=moved))
                    st.rerun()
        confirm = delete_col.checkbox(ctx.t("ip.confirm_delete"), key="img_delete_confirm")
        if delete_col.button(ctx.t("ip.delete"), key="img_delete", disabled=not confirm):
            deleted = run_action(ctx, images.delete_images, store, actor, selected)
            if deleted is not None:
                st.toast(ctx.t("ip.deleted", n=deleted))
                st.session_state.pop("img_delete_confirm", None)   # the next delete asks again
                st.rerun()

# ---- export ------------------------------------------------------------------------------------
if actor.can("report.export"):
    with st.expander(ctx.t("ip.export")):
        st.caption(ctx.t("ip.export_help"))
        if st.button(ctx.t("ip.export_build"), key="img_export"):
            dest = store.home / "exports" / f"dataset-{timefmt.file_stamp(store)}.zip"
            exported = run_action(ctx, images.export_dataset, store, actor, dest)
            if exported is not None:
                st.session_state["img_export_path"] = str(exported.path)
                st.success(ctx.t("ip.export_ready", n=exported.n_images, labels=exported.n_labels))
        export_path = st.session_state.get("img_export_path")
        if export_path:
            with open(export_path, "rb") as fh:
                st.download_button(ctx.t("ip.download"), fh.read(), file_name=export_path.rsplit("/", 1)[-1],
                                   mime="application/zip", key="img_download")
