"""Labels: propose (with live glossary normalisation), list, and review."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import labels as label_service
from core.i18n import UserError, register
from core.neighbours import neighbour_preview
from pages.ui import page_context, run_action

register({
    "lp.title": {"ja": "ラベル", "en": "Labels"},
    "lp.propose": {"ja": "新しいラベルを提案", "en": "Propose a new label"},
    "lp.name": {"ja": "ラベル名（日本語または英語）", "en": "Label name (Japanese or English)"},
    "lp.normalized": {"ja": "正規化: {text}", "en": "Normalised: {text}"},
    "lp.tier": {"ja": "一致の種類", "en": "Match"},
    "lp.auto": {"ja": "用語集の「{canonical}」（{entry}）に自動で対応します — {tier}",
                "en": "Maps automatically to '{canonical}' ({entry}) — {tier}"},
    "lp.not_auto": {"ja": "自動では決まりません（{tier}）。候補を選ぶか新しい用語を作成してください。",
                    "en": "No automatic match ({tier}). Pick a suggestion or create a new term."},
    "lp.choice": {"ja": "対応する用語", "en": "Glossary term"},
    "lp.new_term": {"ja": "新しい用語として登録", "en": "Create a new term"},
    "lp.reading": {"ja": "読み（カタカナ）", "en": "Reading (katakana)"},
    "lp.en": {"ja": "英語", "en": "English gloss"},
    "lp.submit": {"ja": "提案する", "en": "Propose"},
    "lp.proposed": {"ja": "「{name}」を提案しました。", "en": "Proposed '{name}'."},
    "lp.list": {"ja": "ラベル一覧", "en": "All labels"},
    "lp.status_filter": {"ja": "状態で絞り込み", "en": "Filter by status"},
    "lp.none": {"ja": "該当するラベルはありません。", "en": "No labels match."},
    "lp.review": {"ja": "レビュー", "en": "Review"},
    "lp.pick": {"ja": "ラベルを選択", "en": "Choose a label"},
    "lp.approve": {"ja": "承認", "en": "Approve"},
    "lp.reject": {"ja": "却下", "en": "Reject"},
    "lp.retire": {"ja": "廃止", "en": "Retire"},
    "lp.rename": {"ja": "名前を変更", "en": "Rename"},
    "lp.new_name": {"ja": "新しい名前", "en": "New name"},
    "lp.merge_into": {"ja": "統合先", "en": "Merge into"},
    "lp.merge": {"ja": "統合する", "en": "Merge"},
    "lp.alias": {"ja": "別名を追加", "en": "Add alias"},
    "lp.aliases": {"ja": "別名: {aliases}", "en": "Aliases: {aliases}"},
    "lp.done": {"ja": "保存しました。", "en": "Saved."},
    "lp.changed_meanwhile": {"ja": "このラベルは表示後に他のユーザーが更新しました（表示時の版 {seen}、現在 {current}）。",
                             "en": "Someone else changed this label since you opened it (you saw version {seen}, now {current})."},
    "lp.reload": {"ja": "最新の内容を読み込む", "en": "Load the latest version"},
    "lp.neighbours": {"ja": "意味的に近い既存ラベル", "en": "Semantically closest existing labels"},
    "lp.merge_suggest": {"ja": "「{name}」に統合", "en": "Merge into '{name}'"},
    "lp.neighbours_unavailable": {"ja": "近傍を計算できません: {reason}", "en": "Neighbours unavailable: {reason}"},
    "tier.exact": {"ja": "完全一致", "en": "exact"},
    "tier.basic": {"ja": "文字正規化一致（幅・長音・大文字小文字）", "en": "character normalisation (width, dash, case)"},
    "tier.kana": {"ja": "かな一致（ひらがな→カタカナ）", "en": "kana match (hiragana→katakana)"},
    "tier.lemma": {"ja": "語彙素一致（送り仮名・異体字）", "en": "lemma match (okurigana, variant kanji)"},
    "tier.reading": {"ja": "読み一致", "en": "reading match"},
    "tier.reading~": {"ja": "読みが同じ候補（要確認）", "en": "same reading (please confirm)"},
    "tier.contains": {"ja": "含まれる用語の候補", "en": "contains a known term"},
    "tier.none": {"ja": "一致なし（新しい用語）", "en": "no match (new term)"},
    "col.id": {"ja": "ID", "en": "ID"}, "col.name": {"ja": "名前", "en": "Name"},
    "col.canonical": {"ja": "正規形", "en": "Canonical"}, "col.reading": {"ja": "読み", "en": "Reading"},
    "col.en": {"ja": "英語", "en": "English"}, "col.status": {"ja": "状態", "en": "Status"},
    "col.by": {"ja": "作成者", "en": "Created by"},
    "col.rank": {"ja": "順位", "en": "Rank"}, "col.similarity": {"ja": "類似度", "en": "Similarity"}, "col.version": {"ja": "版", "en": "Version"},
})

ctx = page_context()
store, actor = ctx.store, ctx.actor
st.title(ctx.t("lp.title"))

# ---- propose ---------------------------------------------------------------------------------------
if actor.can("label.propose"):
    with st.expander(ctx.t("lp.propose"), expanded=True):
        name = st.text_input(ctx.t("lp.name"), key="propose_name")
        if name.strip():
            result = label_service.preview(store, name)
            st.caption(ctx.t("lp.normalized", text=result.normalized))
            chosen_entry, create_entry = None, False
            if result.auto:
                st.success(ctx.t("lp.auto", canonical=result.canonical, entry=result.entry_id,
                                 tier=ctx.t(f"tier.{result.tier}")))
            else:
                st.info(ctx.t("lp.not_auto", tier=ctx.t(f"tier.{result.tier}")))
                options = [(s.entry_id, f"{s.canonical} — {ctx.t('tier.' + s.tier)}") for s in result.suggestions]
                options.append(("__new__", ctx.t("lp.new_term")))
                picked = st.radio(ctx.t("lp.choice"), options, format_func=lambda o: o[1], key="propose_choice")
                if picked[0] == "__new__":
                    create_entry = True
                    reading = st.text_input(ctx.t("lp.reading"), key="propose_reading")
                    gloss = st.text_input(ctx.t("lp.en"), key="propose_en")
                else:
                    chosen_entry = picked[0]
            if st.button(ctx.t("lp.submit"), type="primary", key="propose_submit"):
                extra = {"reading": reading, "en": gloss} if create_entry else {}
                created = run_action(ctx, label_service.propose, store, actor, name, entry_id=chosen_entry,
                                     create_entry=create_entry, **extra)
                if created:
                    st.success(ctx.t("lp.proposed", name=created["name"]))

# ---- list ------------------------------------------------------------------------------------------
st.subheader(ctx.t("lp.list"))
statuses = st.multiselect(ctx.t("lp.status_filter"), label_service.STATUSES, default=list(label_service.ACTIVE),
                          placeholder=ctx.t("ui.choose"),
                          format_func=lambda s: ctx.t(f"status.{s}"), key="status_filter")
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
    label = st.selectbox(ctx.t("lp.pick"), proposed_first, key="review_pick",
                         format_func=lambda r: f"#{r['id']} {r['name']} → {r['canonical']} ({ctx.t('status.' + r['status'])})")
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
        st.caption(ctx.t("lp.aliases", aliases=", ".join(a["text"] for a in aliases)))

    # Semantic neighbours and the near-duplicate warning.
    try:
        with st.spinner(ctx.t("lp.neighbours")):
            preview = neighbour_preview(store, label["id"], k=5)
    except UserError as err:   # e.g. the encoder cannot be loaded: reviewing must still work
        st.caption(ctx.t("lp.neighbours_unavailable", reason=err.message(ctx.lang)))
    else:
        st.markdown(f"**{ctx.t('lp.neighbours')}**")
        st.dataframe(pd.DataFrame([{
            ctx.t("col.rank"): n.rank, ctx.t("col.name"): n.name, ctx.t("col.canonical"): n.canonical,
            ctx.t("col.status"): ctx.t(f"status.{n.status}"), ctx.t("col.similarity"): round(n.score, 4),
            ctx.t("col.id"): n.label_id} for n in preview.neighbours]), hide_index=True)
        if preview.near_duplicate is not None and preview.near_duplicate.flag:
            nd = preview.near_duplicate
            st.warning(nd.message(ctx.lang))
            if label["status"] in ("proposed", "approved") and st.button(
                    ctx.t("lp.merge_suggest", name=nd.nearest.name), key="merge_suggested"):
                if saved(run_action(ctx, label_service.merge, store, actor, label["id"], nd.nearest.label_id,
                                    expected_version=version, success=ctx.t("lp.done"))):
                    st.rerun()

    cols = st.columns(3)
    for col, action in zip(cols, ("approve", "reject", "retire")):
        allowed_from, _ = label_service.TRANSITIONS[action]
        if col.button(ctx.t(f"lp.{action}"), disabled=label["status"] not in allowed_from, key=f"do_{action}"):
            if saved(run_action(ctx, getattr(label_service, action), store, actor, label["id"], version,
                                success=ctx.t("lp.done"))):
                st.rerun()

    with st.form("rename_form"):
        # keyed per label: what the reviewer typed survives a refused save
        new_name = st.text_input(ctx.t("lp.new_name"), value=label["name"], key=f"rename_{label['id']}")
        if st.form_submit_button(ctx.t("lp.rename")):
            if saved(run_action(ctx, label_service.rename, store, actor, label["id"], new_name, version,
                                success=ctx.t("lp.done"))):
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

if actor.can("label.alias") and active:
    with st.form("alias_form"):
        target = st.selectbox(ctx.t("lp.pick"), active, format_func=lambda r: f"#{r['id']} {r['name']}")
        alias = st.text_input(ctx.t("lp.alias"))
        if st.form_submit_button(ctx.t("lp.alias")) and alias.strip():
            run_action(ctx, label_service.add_alias, store, actor, target["id"], alias, success=ctx.t("lp.done"))
