"""Real-browser test harness: Debian's chromium driven by Playwright against `streamlit run app.py`.

* The browser is the system's ``/usr/bin/chromium`` (installed by ``make test`` through apt); Playwright's
  own browser download is never used. A missing browser fails the test with the reason, never skips.
* The server runs on a free loopback port with its own temp data home, in its own process group, and
  is stopped (with any worker it spawned for that data home) when the test ends.
* Streamlit widgets are found by their key: Streamlit gives every keyed element the CSS class
  ``st-key-<key>``, which is stable across languages and layout changes.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("SGCL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def require_browser():
    """``playwright.sync_api.sync_playwright`` and the chromium path, or a loud failure."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium. `make test` installs it "
                    "when run as root (apt-get install -y chromium); install it, or set SGCL_CHROMIUM.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}); run `make install` (it is in the [test] extra)")
    return sync_playwright, str(CHROMIUM)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    """``streamlit run app.py`` on 127.0.0.1:<free port> with ``env`` added; a context manager."""

    def __init__(self, home: Path, env: dict[str, str], log_path: Path, startup_timeout: float = 120):
        self.home = Path(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "SGCL_HOME": str(self.home), "PYTHONPATH": str(REPO)}
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "StreamlitServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
               "--server.address", "127.0.0.1", "--server.port", str(self.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--global.developmentMode", "false"]
        # Its own process group, so the whole tree can be stopped without touching anything else.
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"streamlit exited with {self.proc.returncode}; log:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"streamlit did not answer on {self.url} within {self.startup_timeout}s; log:\n{self.log_tail()}")

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            _stop_group(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        stop_workers(self.home)
        if not self._log.closed:
            self._log.close()


def _gone(pid: int) -> bool:
    """True when the process has exited (a zombie counts: it only waits for its parent to reap it)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)          # reap it if it is our child (AppTest spawns workers in-process)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state == "Z"


def _stop_group(pgid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if _gone(pgid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    _gone(pgid)


def _worker_pids(home: Path) -> set[int]:
    """Worker processes serving ``home``: the pids its database lists, and any process whose command line
    is ``… core.worker … --home <home>`` (a worker whose row is gone, or not yet written — the app
    records the pid only after spawning — is found too)."""
    pids: set[int] = set()
    db = Path(home) / "sgcl.db"
    if db.exists():
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
            with contextlib.suppress(sqlite3.Error):
                pids |= {r[0] for r in conn.execute("SELECT pid FROM workers WHERE pid IS NOT NULL")}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                args = (proc / "cmdline").read_bytes().split(b"\0")
                if b"core.worker" in args and os.fsencode(str(home)) in args:
                    pids.add(int(proc.name))
    return pids


def stop_workers(home: Path) -> list[int]:
    """Stop the workers the app spawned for this (temporary) data home, whether or not its database
    still lists them. Each runs in its own session (pid == process group); only processes whose command
    line names this data home are touched."""
    stopped = []
    for pid in sorted(_worker_pids(home)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in cmdline and "core.worker" in cmdline:
            try:
                leader = os.getpgid(pid) == pid
            except OSError:
                continue
            if leader:
                _stop_group(pid)
            else:           # not in a session of its own: this process alone
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while not _gone(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                with contextlib.suppress(OSError):
                    if not _gone(pid):
                        os.kill(pid, signal.SIGKILL)
            stopped.append(pid)
    return stopped


_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') !== 'running'
      && app.getAttribute('data-test-connection-state') === 'CONNECTED';
}"""


class App:
    """A Streamlit page in the browser, driven by widget keys and visible text."""

    def __init__(self, page, url: str, artifacts: Path = ARTIFACTS):
        self.page = page
        self.url = url
        self.artifacts = artifacts
        self.shots: list[Path] = []
        artifacts.mkdir(parents=True, exist_ok=True)

    # ---- waiting ---------------------------------------------------------------------------------
    def idle(self, timeout: float = 60) -> "App":
        self.page.wait_for_timeout(400)        # let a click reach the server and the run start
        self.page.wait_for_function(_IDLE_JS, timeout=timeout * 1000)
        return self

    def see(self, text: str, timeout: float = 30):
        """Wait until ``text`` is visible somewhere in the main area or sidebar; returns the locator."""
        locator = self.page.get_by_text(text, exact=False).first
        locator.wait_for(state="visible", timeout=timeout * 1000)
        return locator

    def see_cell(self, text: str, timeout: float = 30):
        """Wait for a st.dataframe cell with ``text`` (the grid draws on a canvas; its accessible
        table of cells is in the DOM but hidden)."""
        locator = self.page.locator('[role="gridcell"]').filter(has_text=text).first
        locator.wait_for(state="attached", timeout=timeout * 1000)
        return locator

    # ---- navigation ------------------------------------------------------------------------------
    def open(self) -> "App":
        self.page.goto(self.url)
        return self.idle()

    def nav(self, title: str) -> "App":
        """Follow a sidebar menu link (client-side, so the session and its login survive)."""
        self.page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
        return self.idle()

    # ---- widgets by key --------------------------------------------------------------------------
    def keyed(self, key: str):
        return self.page.locator(f".st-key-{key}")

    def fill(self, key: str, text: str, commit: bool = True) -> "App":
        field = self.keyed(key).locator("input, textarea").first
        field.fill(text)
        if commit:
            field.press("Enter")
            self.idle()
        return self

    def click(self, key: str) -> "App":
        self.keyed(key).locator("button").first.click()
        return self.idle()

    def choose(self, key: str, option: str) -> "App":
        """Pick ``option`` (visible text, substring) in a selectbox or multiselect."""
        # Streamlit 1.5x+ draws select boxes as react-aria combo boxes (older ones as baseweb selects).
        # The list may not open when the click lands during a rerun, and on a loaded machine it may
        # still show the options of the previous run: reopen it a few times before giving up.
        box = self.keyed(key).locator('[role="combobox"], [data-baseweb="select"]').first
        options = self.page.get_by_role("option")
        offered: list[str] = []
        for attempt in range(6):
            box.click()
            try:
                options.first.wait_for(state="visible", timeout=5_000)
                wanted = options.filter(has_text=option).first
                wanted.wait_for(state="visible", timeout=5_000)
                wanted.click(timeout=10_000)
                self.page.keyboard.press("Escape")
                return self.idle()
            except Exception:
                offered = options.all_inner_texts()
                self.page.keyboard.press("Escape")
                self.idle()
        raise AssertionError(f"no option containing {option!r} in {key!r}; offered: {offered}")

    def pick(self, key: str, option: str) -> "App":
        """Pick the radio button whose label is ``option`` (exact text)."""
        self.keyed(key).get_by_text(option, exact=True).first.click()
        return self.idle()

    def upload(self, key_prefix: str, paths: list[Path]) -> "App":
        self.page.locator(f'[class*="st-key-{key_prefix}"] input[type="file"]').first.set_input_files(
            [str(p) for p in paths])
        return self.idle()

    def button(self, text: str) -> "App":
        self.page.get_by_role("button", name=text).first.click()
        return self.idle()

    # ---- login -----------------------------------------------------------------------------------
    def login(self, username: str, password: str, *, user_label: str, password_label: str, submit: str) -> "App":
        self.page.get_by_label(user_label).fill(username)
        self.page.get_by_label(password_label).fill(password)
        self.page.get_by_role("button", name=submit).click()
        return self.idle()

    # ---- evidence --------------------------------------------------------------------------------
    def shot(self, name: str) -> Path:
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        return path
