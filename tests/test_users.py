import pytest

from core import users
from core.auth import Actor
from core.i18n import UserError


def test_first_start_creates_admin_with_generated_password_once(store, monkeypatch):
    monkeypatch.delenv("SGCL_ADMIN_PASSWORD", raising=False)
    printed = []
    password = users.ensure_admin(store, echo=printed.append)
    assert password and password in printed[0]
    assert users.authenticate(store, "admin", password) == Actor("admin", "admin")
    assert users.ensure_admin(store, echo=printed.append) is None and len(printed) == 1


def test_admin_password_from_environment(store, monkeypatch):
    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "correct horse battery")
    assert users.ensure_admin(store, echo=lambda s: pytest.fail("must not print a given password")) is None
    assert users.authenticate(store, "admin", "correct horse battery").role == "admin"


def test_password_is_hashed_with_argon2(store, admin):
    users.create_user(store, admin, "eri", "s3cret-pass-phrase", "expert")
    row = store.query_one("SELECT password_hash FROM users WHERE username='eri'")
    assert row["password_hash"].startswith("$argon2") and "s3cret-pass-phrase" not in row["password_hash"]


def test_login_failure_and_lockout(store, admin):
    users.create_user(store, admin, "eri", "s3cret-pass-phrase", "expert")
    for _ in range(users.MAX_FAILED_LOGINS - 1):
        with pytest.raises(UserError) as err:
            users.authenticate(store, "eri", "wrong", now=1000.0)
        assert err.value.key == "auth.bad_login"
    with pytest.raises(UserError) as err:
        users.authenticate(store, "eri", "wrong", now=1000.0)
    # the same answer as for a wrong password or an unknown name (which names exist stays secret),
    # and it says that accounts lock
    assert err.value.key == "auth.bad_login" and "ロック" in err.value.message("ja")
    with pytest.raises(UserError) as err:          # the right password does not help while locked
        users.authenticate(store, "eri", "s3cret-pass-phrase", now=1001.0)
    assert err.value.key == "auth.bad_login"
    later = 1000.0 + users.LOCKOUT_SECONDS + 1
    assert users.authenticate(store, "eri", "s3cret-pass-phrase", now=later).username == "eri"
    assert any(r["action"] == "auth.fail" and r["details"].get("locked") for r in store.audit_rows("user", "eri"))


def test_unknown_user_and_inactive_user(store, admin):
    with pytest.raises(UserError):
        users.authenticate(store, "ghost", "whatever")
    users.create_user(store, admin, "eri", "s3cret-pass-phrase", "expert")
    users.set_active(store, admin, "eri", False)
    with pytest.raises(UserError) as err:
        users.authenticate(store, "eri", "s3cret-pass-phrase")
    assert err.value.key == "auth.inactive"             # told only to someone who knows the password
    with pytest.raises(UserError) as err:
        users.authenticate(store, "eri", "a wrong guess")
    assert err.value.key == "auth.bad_login"


def test_only_admin_manages_users(store, admin, reviewer):
    with pytest.raises(UserError) as err:
        users.create_user(store, reviewer, "x", "long enough phrase", "admin")
    assert err.value.key == "err.forbidden"
    users.create_user(store, admin, "eri", "s3cret-pass-phrase", "expert")
    assert users.set_role(store, admin, "eri", "reviewer")["role"] == "reviewer"
    with pytest.raises(UserError):
        users.create_user(store, admin, "eri", "s3cret-pass-phrase", "expert")      # duplicate
    with pytest.raises(UserError):
        users.create_user(store, admin, "bob", "short", "expert")
    with pytest.raises(UserError):
        users.create_user(store, admin, "../bob", "long enough phrase", "expert")
    with pytest.raises(UserError):
        users.create_user(store, admin, "bob", "long enough phrase", "superuser")


def test_last_active_admin_cannot_be_demoted_or_disabled(store, monkeypatch):
    monkeypatch.setenv("SGCL_ADMIN_PASSWORD", "admin pass phrase 1")
    users.ensure_admin(store)
    boss = Actor("admin", "admin")
    for change in (lambda: users.set_role(store, boss, "admin", "reviewer"),
                   lambda: users.set_active(store, boss, "admin", False)):
        with pytest.raises(UserError) as err:
            change()
        assert err.value.key == "auth.last_admin"
    assert users.get_user(store, "admin")["role"] == "admin"
    users.create_user(store, boss, "second", "admin pass phrase 2", "admin")
    assert users.set_role(store, boss, "admin", "reviewer")["role"] == "reviewer"
