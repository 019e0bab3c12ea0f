"""UI and error strings in Japanese and English, in one place.

Pages call ``t(key, lang, **params)``; services raise ``UserError(key, **params)`` whose text is
rendered in the caller's language by the page (``err.message(lang)``), so a refusal reads the same
whether it came from a button or a test.
"""
from __future__ import annotations

LANGS = ("ja", "en")
DEFAULT_LANG = "ja"

# key -> {lang: text}. Keep keys dotted by area; params use str.format names.
STRINGS: dict[str, dict[str, str]] = {}


def register(strings: dict[str, dict[str, str]]) -> None:
    """Add strings (modules with their own messages register them at import)."""
    for key, texts in strings.items():
        missing = set(LANGS) - set(texts)
        if missing:
            raise ValueError(f"string {key!r} lacks {sorted(missing)}")
        STRINGS[key] = texts


def t(key: str, lang: str = DEFAULT_LANG, **params) -> str:
    texts = STRINGS.get(key)
    if texts is None:
        return key
    text = texts.get(lang) or texts[DEFAULT_LANG]
    try:
        return text.format(**params)
    except (KeyError, IndexError):
        return text


class UserError(Exception):
    """A refusal or bad input the user can act on. ``key`` names a string in STRINGS."""

    def __init__(self, key: str, **params):
        self.key = key
        self.params = params
        super().__init__(t(key, "en", **params))

    def message(self, lang: str = DEFAULT_LANG) -> str:
        return t(self.key, lang, **localise_params(self.params, lang))


# Parameters whose values are codes (a status, a role list, an action, a kind of thing): shown in the
# reader's language when a string exists for them, e.g. status=approved → 承認済み.
_PARAM_PREFIX = {"status": "status", "action": "action", "what": "what", "role": "role"}


def localise_params(params: dict, lang: str) -> dict:
    out = dict(params)
    for name, prefix in _PARAM_PREFIX.items():
        value = out.get(name)
        if isinstance(value, str) and f"{prefix}.{value}" in STRINGS:
            out[name] = t(f"{prefix}.{value}", lang)
    if isinstance(out.get("roles"), str):
        roles = [r.strip() for r in out["roles"].split(",") if r.strip()]
        out["roles"] = ("、" if lang == "ja" else ", ").join(t(f"role.{r}", lang) for r in roles)
    return out


register({
    # ---- app shell ----
    "app.title": {"ja": "sgcl-studio", "en": "sgcl-studio"},
    "app.language": {"ja": "言語 / Language", "en": "Language / 言語"},
    "app.user": {"ja": "ユーザー: {user}（{role}）", "en": "User: {user} ({role})"},
    "app.encoder": {"ja": "エンコーダー: {name}", "en": "Encoder: {name}"},
    "app.encoder_random": {"ja": "⚠ このエンコーダーの重みはランダムです（テスト用）",
                           "en": "⚠ This encoder has random weights (testing only)"},
    "app.home": {"ja": "データ: {home}", "en": "Data: {home}"},
    "nav.labels": {"ja": "ラベル", "en": "Labels"},
    "nav.glossary": {"ja": "用語集", "en": "Glossary"},
    "nav.neighbours": {"ja": "近傍", "en": "Neighbours"},
    "nav.images": {"ja": "画像", "en": "Images"},
    "nav.train": {"ja": "学習", "en": "Train"},
    "nav.history": {"ja": "履歴", "en": "History"},
    "nav.predict": {"ja": "推論", "en": "Predict"},
    "nav.admin": {"ja": "管理", "en": "Admin"},
    "nav.audit": {"ja": "監査ログ", "en": "Audit log"},
    "nav.login": {"ja": "ログイン", "en": "Log in"},
    "ui.choose": {"ja": "選択してください", "en": "Choose options"},
    "auth.login_required": {"ja": "ログインしてください。", "en": "Please log in."},
    # ---- roles / permissions ----
    "role.expert": {"ja": "エキスパート", "en": "expert"},
    "role.reviewer": {"ja": "レビュアー", "en": "reviewer"},
    "role.supervisor": {"ja": "スーパーバイザー", "en": "supervisor"},
    "role.admin": {"ja": "管理者", "en": "admin"},
    "what.label": {"ja": "ラベル", "en": "label"},
    "what.glossary entry": {"ja": "用語集の項目", "en": "glossary entry"},
    "what.image": {"ja": "画像", "en": "image"},
    "what.job": {"ja": "ジョブ", "en": "job"},
    "what.run": {"ja": "ラン", "en": "run"},
    "what.user": {"ja": "ユーザー", "en": "user"},
    "action.approve": {"ja": "承認", "en": "approve"},
    "action.reject": {"ja": "却下", "en": "reject"},
    "action.retire": {"ja": "廃止", "en": "retire"},
    "action.rename": {"ja": "名前の変更", "en": "rename"},
    "action.train": {"ja": "学習済みに", "en": "train"},
    "action.read": {"ja": "閲覧", "en": "read"},
    "action.label.propose": {"ja": "ラベルの提案", "en": "propose labels"},
    "action.label.alias": {"ja": "別名の追加", "en": "add aliases"},
    "action.label.review": {"ja": "ラベルのレビュー", "en": "review labels"},
    "action.glossary.edit": {"ja": "用語集の編集", "en": "edit the glossary"},
    "action.image.upload": {"ja": "画像のアップロード", "en": "upload images"},
    "action.image.manage": {"ja": "画像の移動・削除", "en": "move or delete images"},
    "action.train.request": {"ja": "学習の依頼", "en": "request training"},
    "action.job.cancel": {"ja": "ジョブの中止", "en": "cancel jobs"},
    "action.report.export": {"ja": "レポートの出力", "en": "export reports"},
    "action.audit.read": {"ja": "監査ログの閲覧", "en": "read the audit log"},
    "action.settings.edit": {"ja": "設定の変更", "en": "change settings"},
    "action.user.manage": {"ja": "ユーザー管理", "en": "manage users"},
    "err.forbidden": {"ja": "権限がありません: 「{action}」には {roles} の権限が必要です。",
                      "en": "Not allowed: '{action}' needs one of these roles: {roles}."},
    "err.not_found": {"ja": "{what}が見つかりません（id={id}）。", "en": "{what} not found (id={id})."},
    "err.stale_version": {
        "ja": "{what} は他のユーザーによって先に更新されました（あなたの版 {yours}、現在の版 {current}）。"
              "再読み込みしてからもう一度保存してください。入力内容は失われていません。",
        "en": "{what} was changed by someone else first (your version {yours}, current {current}). "
              "Reload and save again; your input has been kept."},
})
