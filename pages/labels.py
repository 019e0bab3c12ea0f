"""Labels: propose (with live glossary normalisation), list, and review."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import dictionary, glossary_store, images
from core import labels as label_service
from core.i18n import UserError
from core.neighbours import neighbour_preview
from pages.ui import as_markdown, md, page_context, run_action
from pages.views import lang_key

REVIEW_ACTIONS = ("approve", "reject", "retire")     # buttons, each with its lp.<action> text
EXAMPLES = 6                                          # example images shown for the label under review

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("lp.title"))

# ---- propose ---------------------------------------------------------------------------------------
NEW_TERM = "__new__"


def suggestion_text(s) -> str:
    return ctx.t("lp.suggestion", canonical=s.canonical, kind=ctx.t(f"tier.{s.tier}"))


def show_dictionary_links(links) -> None:
    """Labels that the dictionary (JMdict) says may mean the same thing: a warning, never automatic."""
    if links:
        st.warning("\n\n".join([f"**{ctx.t('dict.heading')}**", *(f"- {as_markdown(l.describe, ctx.lang)}" for l in links)]))
        st.caption(ctx.t("dict.attribution"))


if actor.can("label.propose"):
    with st.expander(ctx.t("lp.propose"), expanded=True):
        name = st.text_input(ctx.t("lp.name"), key="propose_name")
        if name.strip():
            result = label_service.preview(store, name)
            st.caption(ctx.md("lp.normalized", text=result.normalized))
            chosen_entry, create_entry, reading, gloss = None, False, "", ""
            if result.auto:
                st.success(ctx.md("lp.auto", canonical=result.canonical, tier=ctx.t(f"tier.{result.tier}")))
            else:
                # Nothing is pre-selected: "new term" is the default until the proposer picks a suggestion.
                by_id = {s.entry_id: s for s in result.suggestions}
                if by_id:
                    st.info(ctx.t("lp.not_auto_pick"))
                    choice_key = lang_key(f"propose_choice_{result.normalized}", ctx.lang)
                    picked = st.radio(ctx.t("lp.choice"), [NEW_TERM, *by_id],
                                      index=None if choice_key in st.session_state else 0, key=choice_key,
                                      format_func=lambda o: ctx.t("lp.new_term") if o == NEW_TERM
                                      else md(suggestion_text(by_id[o])))
                else:
                    st.info(ctx.t("lp.no_match"))
                    picked = NEW_TERM
                if picked == NEW_TERM:
                    create_entry = True
                    hint = dictionary.term_hint(result.normalized)
                    if hint:
                        st.caption(ctx.md("dict.hint", reading=hint.reading, en=hint.en))
                    # keyed per name: another name gets its own dictionary defaults
                    reading = st.text_input(ctx.t("lp.reading"), value=hint.reading if hint else "",
                                            key=f"propose_reading_{result.normalized}")
                    gloss = st.text_input(ctx.t("lp.en"), value=hint.en if hint else "",
                                          key=f"propose_en_{result.normalized}")
                else:
                    chosen_entry = picked
            owner = label_service.alias_owner(store, name)
            if owner is not None:     # a reviewer already attached this name to a label
                st.warning(ctx.md("lp.alias_of", name=name, existing=owner["name"], id=owner["id"]))
            show_dictionary_links(dictionary.label_links(store, name))
            if st.button(ctx.t("lp.submit"), type="primary", key="propose_submit"):
                extra = {"reading": reading, "en": gloss} if create_entry else {}
                created = run_action(ctx, label_service.propose, store, actor, name, entry_id=chosen_entry,
                                     create_entry=create_entry, **extra)
                if created:
                    st.success(ctx.md("lp.proposed", name=created["name"]))

# ---- list ------------------------------------------------------------------------------------------
st.subheader(ctx.t("lp.list"))
filter_key = lang_key("status_filter", ctx.lang)     # chips in the current language (issue 21)
statuses = st.multiselect(ctx.t("lp.status_filter"), label_service.STATUSES,
                          default=None if filter_key in st.session_state else list(label_service.ACTIVE),
                          placeholder=ctx.t("ui.choose"),
                          format_func=lambda s: ctx.t(f"status.{s}"), key=filter_key)
rows = label_service.list_labels(store, statuses)
if rows:
    table = pd.DataFrame([{
        ctx.t("col.id"): r["id"], ctx.t("col.name"): r["name"], ctx.t("col.canonical"): r["canonical"],
        ctx.t("col.reading"): r["reading"], ctx.t("col.en"): r["en"], ctx.t("col.status"): ctx.t(f"status.{r['status']}"),
        ctx.t("col.by"): r["created_by"], ctx.t("col.version"): r["version"]} for r in rows])
    st.dataframe(table, hide_index=True, width="stretch")
else:
    st.caption(ctx.t("lp.none"))

# ---- review ----------------------------------------------------------------------------------------
active = label_service.list_labels(store, label_service.ACTIVE)
if actor.can("label.review") and active:
    st.subheader(ctx.t("lp.review"))
    proposed_first = sorted(active, key=lambda r: (r["status"] != "proposed", r["id"]))
    # Options are ids, not rows: a row kept in the widget's state would go stale when someone else saves.
    rows_by_id = {int(r["id"]): r for r in proposed_first}
    # The option texts stay what a review does not change (Streamlit's browser side keeps showing the
    # chosen option's old text when it changes: "ﾖｺﾞﾚ → 汚れ" stayed after a re-link to 異物); the term
    # and status, which a review changes, are in the line under it, drawn fresh on every run.
    picked_id = st.selectbox(ctx.t("lp.pick"), list(rows_by_id), key="review_pick",
                             format_func=lambda i: f"#{i} {rows_by_id[i]['name']}")
    label = rows_by_id[picked_id]
    st.caption(ctx.md("lp.review_line", name=label["name"], canonical=label["canonical"],
                     status=ctx.t(f"status.{label['status']}")))
    # The version this reviewer saw when the label was first shown to them. It is kept across reruns, so
    # a save after someone else's edit is refused (err.stale_version) instead of silently overwriting it.
    seen_key = f"seen_version_{label['id']}"
    version = st.session_state.setdefault(seen_key, label["version"])
    if version != label["version"]:
        st.warning(ctx.t("lp.changed_meanwhile", current=label["version"], seen=version))
        if st.button(ctx.t("lp.reload"), key=f"reload_{label['id']}"):
            st.session_state.pop(seen_key, None)
            st.rerun()

    def saved(result) -> bool:
        if result:
            st.session_state.pop(seen_key, None)   # the next render pins the new version
        return bool(result)
    aliases = label_service.aliases(store, label["id"])
    if aliases:
        st.caption(ctx.md("lp.aliases", aliases=", ".join(a["text"] for a in aliases)))

    # What the label's images look like: a name alone does not tell a reviewer what the class is.
    n_images = images.count_images(store, label["id"])
    st.markdown(f"**{ctx.t('lp.examples', n=n_images)}**")
    if n_images:
        shown = images.list_images(store, label["id"], limit=EXAMPLES)
        for col, row in zip(st.columns(EXAMPLES), shown):
            try:
                col.image(str(images.thumbnail_path(store, row)),
                          caption=f"#{row['id']} · {ctx.t('split.' + row['split'])}")
            except OSError:    # the file is gone from the data home: say so, keep reviewing
                col.caption(f"#{row['id']} ⚠")
    else:
        st.caption(ctx.t("lp.no_examples"))

    # An alias is added to the label under review: no picker of its own that could stay on another label.
    if actor.can("label.alias"):
        with st.form(f"alias_form_{label['id']}", clear_on_submit=True):
            alias = st.text_input(ctx.md("lp.alias_for", name=label["name"]), key=f"alias_text_{label['id']}")
            if st.form_submit_button(ctx.t("lp.alias")) and alias.strip():
                if run_action(ctx, label_service.add_alias, store, actor, label["id"], alias,
                              success=ctx.md("lp.alias_added", alias=alias, name=label["name"])):
                    st.rerun()

    # Semantic neighbours and the near-duplicate warning.
    try:
        with st.spinner(ctx.t("lp.neighbours")):
            preview = neighbour_preview(store, label["id"], k=5)
    except UserError as err:   # e.g. the encoder cannot be loaded: reviewing must still work
        st.caption(ctx.md("lp.neighbours_unavailable", reason=err.message(ctx.lang)))
    else:
        st.markdown(f"**{ctx.t('lp.neighbours')}**")
        st.dataframe(pd.DataFrame([{
            ctx.t("col.rank"): n.rank, ctx.t("col.name"): n.name, ctx.t("col.canonical"): n.canonical,
            ctx.t("col.status"): ctx.t(f"status.{n.status}"), ctx.t("col.similarity"): round(n.score, 4),
            ctx.t("col.id"): n.label_id} for n in preview.neighbours]), hide_index=True)
        if preview.near_duplicate is not None and preview.near_duplicate.flag:
            nd = preview.near_duplicate
            st.warning(as_markdown(nd.message, ctx.lang))
            if label["status"] in ("proposed", "approved") and st.button(
                    ctx.md("lp.merge_suggest", name=nd.nearest.name), key="merge_suggested"):
                if saved(run_action(ctx, label_service.merge, store, actor, label["id"], nd.nearest.label_id,
                                    expected_version=version, success=ctx.t("lp.done"))):
                    st.rerun()

    # Near-duplicates the embedding cannot see (くるま next to 自動車, car and 自動車): the dictionary.
    links = dictionary.label_links(store, int(label["id"]))
    show_dictionary_links(links)
    for link in links:
        if link.kind != "distinct" and label["status"] in ("proposed", "approved") \
                and link.status in label_service.ACTIVE and st.button(
                ctx.md("lp.merge_suggest", name=link.name), key=f"merge_dict_{link.label_id}"):
            if saved(run_action(ctx, label_service.merge, store, actor, label["id"], link.label_id,
                                expected_version=version, success=ctx.t("lp.done"))):
                st.rerun()

    cols = st.columns(3)
    for col, action in zip(cols, REVIEW_ACTIONS):
        allowed_from, _ = label_service.TRANSITIONS[action]
        if col.button(ctx.t(f"lp.{action}"), disabled=label["status"] not in allowed_from, key=f"do_{action}"):
            if saved(run_action(ctx, getattr(label_service, action), store, actor, label["id"], version,
                                success=ctx.t("lp.done"))):
                st.rerun()

    st.caption(ctx.md("lp.current_entry", canonical=label["canonical"]))
    with st.form("rename_form"):
        # keyed per label: what the reviewer typed survives a refused save
        new_name = st.text_input(ctx.t("lp.new_name"), value=label["name"], key=f"rename_{label['id']}")
        keep = st.checkbox(ctx.md("lp.keep_entry", canonical=label["canonical"]), key=f"rename_keep_{label['id']}")
        if st.form_submit_button(ctx.t("lp.rename")):
            if saved(run_action(ctx, label_service.rename, store, actor, label["id"], new_name, version,
                                keep_entry=keep, success=ctx.t("lp.done"))):
                st.rerun()

    # Re-link: point the label at another glossary entry, or at a new term made from its name.
    glossary = glossary_store.load_glossary(store)
    hit = glossary.lookup(label["name"])
    first = [s.entry_id for s in hit.suggestions] + ([hit.entry_id] if hit.auto else [])
    entries = [e.id for e in glossary.entries if e.status != "deprecated" and e.id != label["entry_id"]]
    choices = [NEW_TERM, *dict.fromkeys(i for i in first + entries if i in entries)]

    def entry_text(entry_id: str) -> str:
        """An entry as people know it: canonical, reading and English (never its internal id)."""
        entry = glossary.get(entry_id)
        extra = " · ".join(x for x in (entry.reading, entry.en) if x)
        return f"{entry.canonical} · {extra}" if extra else entry.canonical

    with st.form(f"relink_form_{label['id']}"):
        st.markdown(f"**{ctx.t('lp.relink_title')}**")
        target_entry = st.selectbox(
            ctx.t("lp.relink_target"), choices, key=lang_key(f"relink_target_{label['id']}", ctx.lang),
            format_func=lambda i: ctx.t("lp.relink_new", name=label["name"]) if i == NEW_TERM
            else entry_text(i))
        hint = dictionary.term_hint(label["name"])
        relink_reading = st.text_input(ctx.t("lp.reading"), value=hint.reading if hint else "",
                                       key=f"relink_reading_{label['id']}")
        relink_en = st.text_input(ctx.t("lp.en"), value=hint.en if hint else "", key=f"relink_en_{label['id']}")
        if st.form_submit_button(ctx.t("lp.relink")):
            args = ({"create_entry": True, "reading": relink_reading, "en": relink_en} if target_entry == NEW_TERM
                    else {"entry_id": target_entry})
            relinked = run_action(ctx, label_service.relink, store, actor, label["id"], expected_version=version,
                                  **args)
            if saved(relinked):
                st.toast(ctx.md("lp.relinked", name=relinked["name"], canonical=relinked["canonical"]))
                st.rerun()

    targets = [r for r in active if r["id"] != label["id"]]
    if targets and label["status"] in ("proposed", "approved"):
        with st.form("merge_form"):
            target = st.selectbox(ctx.t("lp.merge_into"), targets,
                                  format_func=lambda r: f"#{r['id']} {r['name']} → {r['canonical']}")
            if st.form_submit_button(ctx.t("lp.merge")):
                if saved(run_action(ctx, label_service.merge, store, actor, label["id"], target["id"],
                                    expected_version=version, success=ctx.t("lp.done"))):
                    st.rerun()

if actor.can("label.alias") and not actor.can("label.review") and active:
    # Experts, who have no review section: the alias form picks its label itself.
    with st.form("alias_form"):
        target = st.selectbox(ctx.t("lp.pick"), active, format_func=lambda r: f"#{r['id']} {r['name']}")
        alias = st.text_input(ctx.t("lp.alias"))
        if st.form_submit_button(ctx.t("lp.alias")) and alias.strip():
            run_action(ctx, label_service.add_alias, store, actor, target["id"], alias, success=ctx.t("lp.done"))
