"""Neighbours: which labels sit closest to a label (or to any text) in the active encoder's space,
and a clustered similarity heatmap of the label set. UI only; the work is in core.neighbours."""
from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from core import dictionary
from core.encoders import active_encoder_spec, load_encoder, spec_has_random_weights
from core.i18n import UserError
from core.inputs import clean_name
from core.neighbours import DEFAULT_STATUSES, label_index, near_duplicates, neighbours, similarity_matrix
from pages.ui import as_markdown, page_context
from pages.views import encoder_text, status_title

TABLE_COLUMNS = ("rank", "label", "canonical", "status", "similarity")

ctx = page_context()
st.title(ctx.t("nbr.title"))
st.caption(ctx.t("nbrpage.intro"))

spec = active_encoder_spec(ctx.store)
st.caption(ctx.md("app.encoder", name=encoder_text(spec, ctx.lang)))
if spec_has_random_weights(spec):
    st.warning(ctx.t("app.encoder_random"))

try:
    with st.spinner(ctx.t("nbrpage.loading")):
        encoder = load_encoder(spec, ctx.store.home)
except UserError as err:
    ctx.error(err)
    st.stop()

# Embedding every label may take a while the first time (e5: ~8 ms per label on 2 cores).
bar = st.progress(0.0, text=ctx.t("nbrpage.embedding"))
index = label_index(ctx.store, encoder, progress=lambda f: bar.progress(float(f), text=ctx.t("nbrpage.embedding")))
bar.empty()

labels = index.labels
if not labels:
    st.info(ctx.t("nbrpage.no_labels"))
    st.stop()


def status_text(status: str) -> str:
    return status_title(status, ctx.lang)


def label_caption(label: dict) -> str:
    extra = f" → {label['canonical']}" if label.get("canonical") and label["canonical"] != label["name"] else ""
    return f"{label['name']}{extra} [{status_text(label['status'])}] #{label['id']}"


all_statuses = sorted({l["status"] for l in labels})
statuses = st.multiselect(ctx.t("nbrpage.statuses"), all_statuses, placeholder=ctx.t("ui.choose"),
                          default=[s for s in all_statuses if s in DEFAULT_STATUSES] or all_statuses,
                          format_func=status_text)

# ---- neighbour query --------------------------------------------------------------------------
modes = {"label": ctx.t("nbrpage.mode_label"), "text": ctx.t("nbrpage.mode_text")}
mode = st.radio(ctx.t("nbrpage.query_mode"), list(modes), format_func=modes.get, horizontal=True)
by_id = {int(l["id"]): l for l in labels}
if mode == "label":
    query = st.selectbox(ctx.t("nbrpage.pick_label"), list(by_id), format_func=lambda i: label_caption(by_id[i]))
else:
    query = st.text_input(ctx.t("nbrpage.text"), placeholder="バイク / scratch")
    try:
        # Bounded and cleaned like a label name before anything embeds it (a 10,000-character query
        # kept e5 busy for 43 s). No max_chars on the box: Streamlit would cut a pasted text silently;
        # the refusal says why and the text stays in the box to shorten.
        query = clean_name(query, "query", required=False)
    except UserError as err:
        ctx.error(err)
        query = None
k = st.slider(ctx.t("nbrpage.k"), 1, 50, 10)

if query not in (None, ""):
    try:
        found = neighbours(ctx.store, encoder, query, k=k, statuses=statuses)
        report = near_duplicates(ctx.store, encoder, query)
    except UserError as err:
        ctx.error(err)
        found, report = [], None
    if report is not None and report.nearest is not None:
        (st.warning if report.flag else st.caption)(as_markdown(report.message, ctx.lang))
    # What the embedding cannot see: the same word in the other language or script (car / 自動車, くるま / 車).
    links = dictionary.label_links(ctx.store, query)
    if links:
        st.warning("\n\n".join([f"**{ctx.t('dict.heading')}**", *(f"- {as_markdown(l.describe, ctx.lang)}" for l in links)]))
        st.caption(ctx.t("dict.attribution"))
    st.subheader(ctx.t("nbrpage.table"))
    if not found:
        st.info(ctx.t("nbrpage.none_found"))
    else:
        cols = {c: ctx.t(f"nbrpage.col.{c}") for c in TABLE_COLUMNS}
        cols["id"] = ctx.t("col.id")
        table = pd.DataFrame([{"rank": n.rank, "label": n.name, "canonical": n.canonical,
                               "status": status_text(n.status), "similarity": round(n.score, 4),
                               "id": n.label_id} for n in found])
        st.dataframe(table.rename(columns=cols), hide_index=True, width="stretch")
        # Cosines of one encoder sit in a narrow band (e5: 0.85–0.97): zoom the axis to it, or every bar
        # looks equally long. Bars start at the band's floor (x2), not at 0.
        low = max(-1.0, float(table["similarity"].min()) - 0.01)
        high = min(1.0, float(table["similarity"].max()) + 0.005)
        chart = alt.Chart(table.assign(floor=low)).mark_bar().encode(
            x=alt.X("floor:Q", title=cols["similarity"], scale=alt.Scale(domain=[low, high], zero=False, nice=False)),
            x2="similarity:Q",
            y=alt.Y("label:N", title=cols["label"], sort=alt.EncodingSortField("rank", order="ascending")),
            tooltip=[alt.Tooltip(f"{c}:{'Q' if c in ('rank', 'similarity') else 'N'}", title=cols[c])
                     for c in TABLE_COLUMNS])
        st.altair_chart(chart, width="stretch")
        st.download_button(ctx.t("nbrpage.download_table"), table.to_csv(index=False).encode("utf-8-sig"),
                           file_name="neighbours.csv", mime="text/csv")

# ---- heatmap ------------------------------------------------------------------------------------
st.subheader(ctx.t("nbrpage.heatmap"))
st.caption(ctx.t("nbrpage.heatmap_help"))
name_filter = st.text_input(ctx.t("nbrpage.filter"), key="heatmap_filter").strip().casefold()
subset = [l for l in labels if l["status"] in statuses
          and (not name_filter or name_filter in l["name"].casefold() or name_filter in str(l["canonical"]).casefold())]
max_n = st.slider(ctx.t("nbrpage.max_n"), 2, 200, 60, key="heatmap_max")
subset = subset[:max_n]
if len(subset) < 2:
    st.info(ctx.t("nbrpage.too_few"))
else:
    matrix, order = similarity_matrix(ctx.store, encoder, [int(l["id"]) for l in subset])
    # Every row and column labelled with the whole name (no "#id" unless two labels share a name): cells
    # stay square and big enough for a readable name per row up to 60 labels; the chart scrolls beyond.
    counts = pd.Series([by_id[i]["name"] for i in order]).value_counts()
    names = [by_id[i]["name"] if counts[by_id[i]["name"]] == 1 else f"{by_id[i]['name']} #{i}" for i in order]
    frame = pd.DataFrame(matrix, index=names, columns=names)
    long = frame.reset_index(names="a").melt(id_vars="a", var_name="b", value_name="similarity")
    cell = max(14, min(28, 900 // len(names)))
    axis = dict(labelOverlap=False, labelLimit=600, labelFontSize=12 if cell >= 16 else 11, labelPadding=4)
    similarity = ctx.t("nbrpage.col.similarity")
    heat = alt.Chart(long).mark_rect().encode(
        x=alt.X("b:N", sort=names, title=None, axis=alt.Axis(labelAngle=-60, **axis)),
        y=alt.Y("a:N", sort=names, title=None, axis=alt.Axis(**axis)),
        color=alt.Color("similarity:Q", title=similarity, scale=alt.Scale(scheme="viridis", zero=False)),
        tooltip=[alt.Tooltip("a:N", title=ctx.t("nbrpage.col.label")), alt.Tooltip("b:N", title=ctx.t("nbrpage.col.label")),
                 alt.Tooltip("similarity:Q", title=similarity, format=".3f")],
    ).properties(width=cell * len(names), height=cell * len(names),        # the plot's size; names come on top
                 autosize=alt.AutoSizeParams(type="pad", contains="padding"))
    st.altair_chart(heat, width="content")
    st.download_button(ctx.t("nbrpage.download_matrix"), frame.to_csv().encode("utf-8-sig"),
                       file_name="similarity_matrix.csv", mime="text/csv")
