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
        return t(self.key, lang, **self.params)


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
    "err.forbidden": {"ja": "権限がありません: 「{action}」には {roles} の権限が必要です。",
                      "en": "Not allowed: '{action}' needs one of these roles: {roles}."},
    "err.not_found": {"ja": "{what} が見つかりません（id={id}）。", "en": "{what} not found (id={id})."},
    "err.stale_version": {
        "ja": "{what} は他のユーザーによって先に更新されました（あなたの版 {yours}、現在の版 {current}）。"
              "再読み込みしてからもう一度保存してください。入力内容は失われていません。",
        "en": "{what} was changed by someone else first (your version {yours}, current {current}). "
              "Reload and save again; your input has been kept."},
})
