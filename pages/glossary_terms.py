"""Glossary: search, edit an entry and its aliases, CSV import (with a preview) and export, lint."""
from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit import config as st_config

from core import dictionary, glossary_store, settings
from core.i18n import UserError, has
from glossary import GlossaryEntry, normalize_chars
from pages.ui import page_context, run_action
from pages.uploads import localise_uploader

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("gp.title"))
glossary = glossary_store.load_glossary(store)

query = st.text_input(ctx.t("gp.search"), key="gloss_search")
if query.strip():
    hit = glossary.lookup(query)
    found = f"{hit.canonical} — {ctx.t('tier.' + hit.tier)}" if hit.auto else ctx.t("gp.no_match")
    st.markdown(ctx.md("gp.lookup", query=query, result=found))
    if hit.suggestions:
        st.caption(ctx.md("gp.suggestions", items=", ".join(
            f"{s.canonical} ({ctx.t('tier.' + s.tier)})" for s in hit.suggestions)))

rows = glossary_store.entry_rows(store)
st.subheader(ctx.t("gp.entries", n=len(rows)))
TABLE_COLUMNS = ("canonical", "reading", "en", "aliases", "status", "version")


def entry_status(status: str) -> str:
    return ctx.t(f"gp.status.{status}")


def entry_name(row: dict) -> str:
    """An entry as people know it (canonical · English); its id is the CSV's business, not the screen's."""
    return f"{row['canonical']} · {row['en']}" if row.get("en") else row["canonical"]


frame = pd.DataFrame(rows)[["id", *TABLE_COLUMNS]]
if query.strip():
    needle = query.strip().casefold()
    mask = frame.apply(lambda r: any(needle in str(v).casefold() for v in r.values), axis=1)
    if hit.entry_id:
        mask |= frame["id"] == hit.entry_id
    frame = frame[mask]
shown = frame[list(TABLE_COLUMNS)].assign(status=frame["status"].map(entry_status))
st.dataframe(shown.rename(columns={c: ctx.t(f"gp.col.{c}") for c in TABLE_COLUMNS}), hide_index=True,
             width="stretch")
st.download_button(ctx.t("gp.export"), glossary_store.export_csv(store), "glossary.csv", "text/csv")

if not actor.can("glossary.edit"):
    st.caption(ctx.t("gp.read_only"))
    st.stop()


def _entry_form(key: str, row: dict, is_new: bool) -> GlossaryEntry | None:
    def k(field: str) -> str:   # keyed per entry: what a reviewer typed survives a refused save
        return f"{key}_{field}_{row.get('id', '')}"

    with st.form(key):
        entry_id = st.text_input(ctx.t("gp.id"), value=row.get("id", ""), key=k("id")) if is_new else row["id"]
        canonical = st.text_input(ctx.t("gp.canonical"), value=row.get("canonical", ""), key=k("canonical"))
        reading = st.text_input(ctx.t("gp.reading"), value=row.get("reading", ""), key=k("reading"))
        en = st.text_input(ctx.t("gp.en"), value=row.get("en", ""), key=k("en"))
        embed_text = st.text_input(ctx.t("gp.embed_text"), value=row.get("embed_text", ""), key=k("embed_text"))
        aliases = st.text_input(ctx.t("gp.aliases"), value=row.get("aliases", ""), key=k("aliases"))
        # distinct_from holds entry ids and literal forms: entries are picked by name (never shown as
        # raw ids such as defect.scuff|defect.impact_mark), forms are typed
        items = [x for x in (row.get("distinct_from") or "").split("|") if x]
        names = {r["id"]: entry_name(r) for r in rows if r["id"] != row.get("id")}
        distinct_ids = st.multiselect(ctx.t("gp.distinct_entries"), list(names),
                                      default=[x for x in items if x in names], key=k("distinct_ids"),
                                      format_func=lambda i: names[i], placeholder=ctx.t("ui.choose"))
        distinct = st.text_input(ctx.t("gp.distinct_forms"), value="|".join(x for x in items if x not in names),
                                 key=k("distinct"))
        notes_ja = st.text_area(ctx.t("gp.notes_ja"), value=row.get("notes_ja", ""), key=k("notes_ja"))
        notes = st.text_area(ctx.t("gp.notes_en"), value=row.get("notes", ""), key=k("notes"))
        statuses = ["draft", "approved", "deprecated"]
        status = st.selectbox(ctx.t("gp.status"), statuses, index=statuses.index(row.get("status", "approved")),
                              key=k("status"), format_func=entry_status)
        if not st.form_submit_button(ctx.t("gp.create" if is_new else "gp.save"), type="primary"):
            return None
    split = lambda text: [p.strip() for p in text.split("|") if p.strip()]  # noqa: E731
    return GlossaryEntry(id=entry_id.strip(), canonical=canonical.strip(), reading=reading.strip(), en=en.strip(),
                         embed_text=embed_text.strip(), aliases=split(aliases), distinct_from=[*distinct_ids, *split(distinct)],
                         notes=notes, notes_ja=notes_ja, status=status)


st.subheader(ctx.t("gp.edit"))
by_id = {r["id"]: r for r in rows}
picked = st.selectbox(ctx.t("gp.pick"), list(by_id), key="gloss_pick", format_func=lambda i: entry_name(by_id[i]))
if picked:
    # The version this reviewer opened is pinned across reruns, so a save over someone else's newer
    # edit is refused (and the typed fields, keyed per entry, are kept) instead of overwriting it.
    seen_key = f"gloss_seen_version_{picked}"
    seen = st.session_state.setdefault(seen_key, by_id[picked]["version"])
    if seen != by_id[picked]["version"]:
        st.warning(ctx.t("gp.changed_meanwhile", seen=seen, current=by_id[picked]["version"]))
    if seen != by_id[picked]["version"] and st.button(ctx.t("gp.reload"), key=f"gloss_reload_{picked}"):
        st.session_state.pop(seen_key, None)
        for name in list(st.session_state):
            if str(name).startswith("edit_entry_") and str(name).endswith(f"_{picked}"):
                st.session_state.pop(name, None)
        st.rerun()
    edited = _entry_form("edit_entry", by_id[picked], is_new=False)
    if edited and run_action(ctx, glossary_store.save_entry, store, actor, edited,
                             expected_version=seen, success=ctx.t("gp.saved")):
        st.session_state.pop(seen_key, None)
        st.rerun()

with st.expander(ctx.t("gp.new")):
    # JMdict suggests the reading and English gloss of a Japanese term; the reviewer copies them into
    # the form (a form cannot react to typing, so the look-up sits above it).
    term = st.text_input(ctx.t("gp.dict_lookup"), key="gloss_dict_term")
    if term.strip():
        hint = dictionary.term_hint(term)
        if hint is None:
            st.caption(ctx.t("gp.dict_none") if dictionary.available()
                       else ctx.md("dict.unavailable", reason=dictionary.unavailable_reason() or ""))
        else:
            st.info(ctx.md("dict.hint", reading=hint.reading, en=hint.en) + "  \n"
                    + ctx.md("gp.dict_glosses", glosses="; ".join(hint.glosses)))
            if st.button(ctx.t("gp.dict_use"), key="gloss_dict_use"):
                st.session_state["new_entry_canonical_"] = normalize_chars(term)
                st.session_state["new_entry_reading_"] = hint.reading
                st.session_state["new_entry_en_"] = hint.en
                st.rerun()
        st.caption(ctx.t("dict.attribution"))
    created = _entry_form("new_entry", {}, is_new=True)
    if created and run_action(ctx, glossary_store.save_entry, store, actor, created, create=True,
                              success=ctx.t("gp.saved")):
        st.rerun()

st.subheader(ctx.t("gp.import"))
upload = st.file_uploader(ctx.t("gp.import"), type=["csv"], key="gloss_csv")

def _import_preview(data: bytes):
    """The preview of this file, computed once per file and glossary state (not on every rerun while the
    file stays selected), with a progress bar while a long file is read."""
    import hashlib

    key = (hashlib.sha256(data).hexdigest(), glossary_store.revision(store),
           settings.get(store, "glossary_import_max_rows"))
    cached = st.session_state.get("gloss_import_preview")
    if cached and cached[0] == key:
        return cached[1]
    bar = st.progress(0.0, text=ctx.t("gp.import_reading", rows=0))
    lines = max(1, data.count(b"\n"))

    def show(rows: int) -> None:
        bar.progress(min(1.0, rows / lines), text=ctx.t("gp.import_reading", rows=rows))

    try:
        result = glossary_store.preview_import(store, data, progress=show)
    except UserError as err:
        result = err
    finally:
        bar.empty()
    st.session_state["gloss_import_preview"] = (key, result)
    return result


localise_uploader("gloss_csv", ctx.lang, st_config.get_option("server.maxUploadSize"), ["csv"])
if upload is not None:
    data = upload.getvalue()
    preview = _import_preview(data)
    if isinstance(preview, UserError):
        ctx.error(preview)
    else:
        st.info(ctx.t("gp.preview", added=len(preview.added), changed=len(preview.changed),
                      unchanged=preview.unchanged))
        changes = [{ctx.t("gp.col.canonical"): e.canonical, ctx.t("gp.col.change"): ctx.t("gp.change.added")}
                   for e in preview.added]
        changes += [{ctx.t("gp.col.canonical"): f"{row['canonical']} → {e.canonical}",
                     ctx.t("gp.col.change"): ctx.t("gp.change.changed")} for row, e in preview.changed]
        if changes:
            st.dataframe(pd.DataFrame(changes), hide_index=True)
        if preview.has_changes and st.button(ctx.t("gp.apply"), type="primary"):
            if run_action(ctx, glossary_store.apply_import, store, actor, data, success=ctx.t("gp.applied")):
                st.rerun()

st.subheader(ctx.t("gp.lint"))
collisions = glossary.lint()
if collisions:
    names = {r["id"]: entry_name(r) for r in rows}
    st.dataframe(pd.DataFrame([{ctx.t("gp.col.tier"): ctx.t(f"tier.{c.tier}") if has(f"tier.{c.tier}") else c.tier,
                                ctx.t("gp.col.key"): c.key,
                                ctx.t("gp.col.entries"): ", ".join(names.get(i, i) for i in c.entry_ids),
                                ctx.t("gp.col.forms"): "; ".join(f"{names.get(i, i)}: {' / '.join(map(str, forms))}"
                                                                for i, forms in c.forms.items())}
                               for c in collisions]),
                 hide_index=True)
else:
    st.success(ctx.t("gp.lint_clean"))
