"""Command line: ``python -m core.cli <command> ...``.

Adding a command = one ``add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to a runner ``(args) -> int`` + one line in ``COMMANDS``. Every command gets ``--home``,
``--user``, ``--as-system`` and ``--lang`` from ``common``; use :func:`open_store` and
:func:`actor_for` in the runner.

Who is acting. A command that changes or exports data acts as an authenticated user, as in the app:
``--user NAME`` proves it with that account's password (``SGCL_PASSWORD``, else asked for on the
terminal; failures count towards the account's lockout). ``--as-system`` acts as the built-in
``system`` admin and is for the machine's own account only: it is refused unless the operating-system
user running the command owns the data home (whoever owns it can edit the database anyway), and each
use is audited with that OS user's name.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from pathlib import Path

from core import images
from core.auth import SYSTEM, Actor
from core.glossary_store import seed_if_empty
from core.i18n import DEFAULT_LANG, LANGS, UserError, t
from core.store import Store
from core.users import authenticate, ensure_admin


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="data home (default: $SGCL_HOME or ./sgcl-data)")
    common.add_argument("--user", help="act as this user; the password comes from $SGCL_PASSWORD or is asked for")
    common.add_argument("--as-system", action="store_true",
                        help="act as the built-in 'system' admin; only for the OS account that owns the data home")
    common.add_argument("--lang", choices=LANGS, default=DEFAULT_LANG, help="language of messages")
    return common


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.home) if args.home else Store()


def _os_user_name(uid: int) -> str:
    try:
        import pwd
        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def actor_for(store: Store, args: argparse.Namespace) -> Actor:
    """The authenticated user the command acts as (see the module docstring), or a ``UserError``."""
    if args.user and args.as_system:
        raise UserError("cli.user_and_system")
    if args.as_system:
        owner, me = store.home.stat().st_uid, os.geteuid()
        if owner != me:
            raise UserError("cli.as_system_not_owner", owner=_os_user_name(owner), me=_os_user_name(me))
        store.audit(SYSTEM.username, "cli.as_system", "cli", getattr(args, "command", None),
                    os_user=_os_user_name(me))
        return SYSTEM
    if not args.user:
        raise UserError("cli.needs_identity")
    password = os.environ.get("SGCL_PASSWORD")
    if password is None:
        if not sys.stdin.isatty():
            raise UserError("cli.no_password", user=args.user)
        password = getpass.getpass(t("cli.password_prompt", args.lang, user=args.user))
    return authenticate(store, args.user, password)


# ---- import-folder ------------------------------------------------------------------------------
def add_import_folder(sub, common) -> None:
    p = sub.add_parser("import-folder", parents=[common],
                       help="import an ImageNet-style folder: <root>/<label>/* or <root>/{train,test}/<label>/*")
    p.add_argument("root", type=Path)
    p.add_argument("--create-labels", action="store_true",
                   help="make a label for each folder that matches none (approved when you may review, "
                        "else proposed)")
    p.set_defaults(func=run_import_folder)


def run_import_folder(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    store = open_store(args)
    actor = actor_for(store, args)
    bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = images.import_folder(store, actor, args.root, create_labels=args.create_labels, progress=progress)
    bar.close()
    lang = args.lang
    for r in report.results:
        if r.status in ("error", "conflict"):
            print(t("cli.import_problem", lang, status=t(f"ip.status.{r.status}", lang), name=r.name,
                    message=r.message(lang)))
    counts = report.counts
    print(t("cli.import_labels", lang, matched=len(report.labels), created=len(report.created),
            proposed=len(report.proposed), entries=len(report.new_entries), unmatched=len(report.unmatched)))
    print(t("cli.import_counts", lang, **counts, seconds=f"{report.seconds:.1f}",
            rate=f"{report.images_per_second:.0f}"))
    return 1 if report.unmatched or counts["error"] else 0


# ---- export -------------------------------------------------------------------------------------
def add_export(sub, common) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="export approved and trained labels' images as train/ + test/ folders with images.csv")
    p.add_argument("dest", type=Path, help="a .zip file, or a folder that does not exist yet")
    p.add_argument("--format", choices=("zip", "folder"), help="default: zip when dest ends in .zip")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    actor = actor_for(store, args)
    fmt = args.format or ("zip" if args.dest.suffix.lower() == ".zip" else "folder")
    started = time.perf_counter()
    result = images.export_dataset(store, actor, args.dest, fmt=fmt)
    print(t("cli.export_done", args.lang, n=result.n_images, labels=result.n_labels, path=str(result.path),
            seconds=f"{time.perf_counter() - started:.1f}"))
    return 0


# ---- init ------------------------------------------------------------------------------------------
def add_init(sub, common) -> None:
    p = sub.add_parser("init", parents=[common],
                       help="create/migrate the data home, seed the starter glossary and the first admin")
    p.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    """What `make run` does before starting the app, so the first-start admin password is printed on the
    console at start-up rather than when the first browser connects. Acts as no user: it only creates
    what a fresh home needs (the first admin, the starter glossary) and changes nothing that exists."""
    store = open_store(args)
    ensure_admin(store)
    added = seed_if_empty(store)
    images.remove_stale_uploads(store)
    print(f"data home {store.home} ready (schema v{store.schema_version}"
          + (f", {added} starter glossary entries" if added else "") + ")")
    return 0


# ---- experiment (core/cli_experiment.py; torch is imported only when it runs) -------------------
def add_experiment(sub, common) -> None:
    from core.cli_experiment import add_experiment as add
    add(sub, common)


# ---- model bundles and line inference (core/deploy, core/runtime) -------------------------------
def add_export_model(sub, common) -> None:
    p = sub.add_parser("export-model", parents=[common],
                       help="export a completed task as a parity-checked model bundle (zip) for the line")
    p.add_argument("run", type=int, help="run id")
    p.add_argument("dest", type=Path, help="where to write the bundle .zip")
    p.add_argument("--task", type=int, help="task number (1, 2, …; default: the latest completed)")
    p.set_defaults(func=run_export_model)


def run_export_model(args: argparse.Namespace) -> int:
    import json
    import zipfile

    from core.deploy.bundle import export_bundle

    store = open_store(args)
    actor = actor_for(store, args)
    path = export_bundle(store, actor, args.run, None if args.task is None else args.task - 1, dest=args.dest)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    print(t("deploy.export_done", args.lang, version=manifest["model"]["version"], path=str(args.dest),
            images=manifest["parity"]["images"], diff=f"{manifest['parity']['max_abs_diff']:.1e}"))
    return 0


def add_predict_folder(sub, common) -> None:
    p = sub.add_parser("predict-folder", parents=[common],
                       help="classify every image in a folder with a bundle; CSV and optional sorting")
    p.add_argument("folder", type=Path)
    p.add_argument("--bundle", required=True, type=Path, help="a model bundle .zip")
    p.add_argument("--csv", type=Path, help="write one row per image here (default: stdout)")
    p.add_argument("--sort-into", type=Path, help="copy images into <dir>/<class>/ and <dir>/_unknown/")
    p.set_defaults(func=run_predict_folder)


def _open_bundle(path: Path):
    from core.runtime.bundle import BadBundle, Bundle

    try:
        return Bundle.open(path)
    except (BadBundle, OSError) as exc:
        raise UserError("deploy.bad_bundle", reason=str(exc)) from None


def run_predict_folder(args: argparse.Namespace) -> int:
    from core.runtime.folder import predict_folder, write_csv

    if not args.folder.is_dir():
        raise UserError("deploy.bad_bundle", reason=f"{args.folder}: not a folder")
    bundle = _open_bundle(args.bundle)
    rows = predict_folder(bundle, args.folder, args.csv, args.sort_into)
    if args.csv is None:
        write_csv(sys.stdout, rows)
    bad = sum(1 for r in rows if r["error"])
    print(f"{len(rows)} images, {sum(1 for r in rows if r['unknown'] == 1)} unknown, {bad} unreadable; "
          f"model {bundle.version}", file=sys.stderr)
    return 1 if bad else 0


def add_watch(sub, common) -> None:
    p = sub.add_parser("watch", parents=[common],
                       help="classify images as they arrive in a folder (a line); each image once, across restarts")
    p.add_argument("folder", type=Path)
    p.add_argument("--bundle", required=True, type=Path, help="a model bundle .zip")
    p.add_argument("--csv", type=Path, required=True, help="rows are appended here")
    p.add_argument("--sort-into", type=Path, help="copy images into <dir>/<class>/ and <dir>/_unknown/")
    p.add_argument("--state", type=Path, help="processed-images state file (default: next to the CSV)")
    p.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    from core.runtime.folder import Watcher

    if not args.folder.is_dir():
        raise UserError("deploy.bad_bundle", reason=f"{args.folder}: not a folder")
    bundle = _open_bundle(args.bundle)
    watcher = Watcher(bundle, args.folder, args.csv, args.sort_into, args.state,
                      on_row=lambda r: print(f"{r['file']}\t{r['class'] or ('?' if r['error'] else '_unknown')}\t"
                                             f"{r['score']}\t{r['error']}", flush=True))
    print(f"watching {args.folder} with {bundle.version}; Ctrl-C stops", file=sys.stderr)
    try:
        watcher.run()
    except KeyboardInterrupt:
        pass
    return 0


# Register a command with one line here.
COMMANDS = [
    add_init,
    add_import_folder,
    add_export,
    add_experiment,
    add_export_model,
    add_predict_folder,
    add_watch,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.cli", description="sgcl-studio command line")
    sub = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for add in COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as err:
        print(t("cli.error", args.lang, message=err.message(args.lang)), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
