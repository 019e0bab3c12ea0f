"""Admin page's API tokens (made, shown once, revoked; only the hash stored) and the model-bundle
download on Predict/History for supervisors (not for experts)."""
from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from core.auth import Actor
from core.deploy.tokens import check_token, TokenRefused
from core.store import Store
from tests.conftest import REPO, log_in_page
from deploy_fixtures import deployed, jpeg  # noqa: F401  (fixture)


@pytest.fixture
def no_worker(monkeypatch):
    import core.worker

    monkeypatch.setattr(core.worker, "ensure_worker", lambda store: False)


def _page(home, actor, page, lang="en") -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    log_in_page(at, home, actor, lang=lang)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_admin_makes_a_token_sees_it_once_and_revokes_it(sgcl_home, no_worker):
    admin = Actor("root", "admin")
    at = _page(sgcl_home, admin, "pages/admin.py")
    at.text_input(key="token_name").input("line 3 <b>camera</b>")
    at.button[[b.label for b in at.button].index("Create token")].click().run()
    assert not at.exception, at.exception
    shown = [c.value for c in at.code]
    assert len(shown) == 1 and shown[0].startswith("sgcl_")
    token = shown[0]
    store = Store(sgcl_home)
    assert check_token(store, f"Bearer {token}", "predict")["name"] == "line 3 <b>camera</b>"
    assert token not in str(store.query("SELECT * FROM api_tokens"))
    at.run()                                       # the next run does not show it again
    assert not [c.value for c in at.code]
    at.button(key="token_revoke").click().run()
    assert not at.exception, at.exception
    with pytest.raises(TokenRefused) as refused:
        check_token(store, f"Bearer {token}", "predict")
    assert refused.value.status == 401


def test_supervisors_download_the_bundle_experts_do_not(deployed, tmp_path, no_worker, monkeypatch):
    home = tmp_path / "copy"
    shutil.copytree(deployed["store"].home, home)
    monkeypatch.setenv("SGCL_ENCODER", "tiny-test")
    at = _page(home, Actor("sora", "supervisor"), "pages/predict.py", lang="ja")
    assert [b.label for b in at.get("download_button")] == ["モデルバンドルをダウンロード（タスク 2）"]
    at = _page(home, Actor("sora", "supervisor"), "pages/history.py")
    assert "Download model bundle (task 2)" in [b.label for b in at.get("download_button")]
    at = _page(home, Actor("eri", "expert"), "pages/predict.py")
    assert not [b for b in at.get("download_button") if "bundle" in b.label]
    assert any("No predictions from the inference service" in c.value for c in at.caption)

    # predictions the service recorded show as counts per class and an unknown rate
    from core.deploy.predictions import record
    from core.runtime import Bundle

    bundle = Bundle.open(deployed["bundle"])
    preds = bundle.predict([jpeg(n, 60 + i) for i, n in enumerate(["cat", "dog", "bird", "cat"])])
    record(Store(home), bundle.manifest, "service", preds, [None] * 4)
    at = _page(home, Actor("sora", "supervisor"), "pages/history.py")
    unknown = sum(p.unknown for p in preds)
    assert any(c.value.startswith(f"4 images, {unknown} not a trained class") for c in at.caption)
