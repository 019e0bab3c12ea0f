"""Command line: ``python -m core.cli <command> ...``.

Adding a command = one ``add_<name>(subparsers)`` function that declares its arguments and sets
``func`` to a runner ``(args) -> int`` + one line in ``COMMANDS``. Every command gets ``--home`` and
``--user`` from ``common``; use :func:`open_store` and :func:`actor_for` in the runner.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core.auth import SYSTEM, Actor
from core.i18n import DEFAULT_LANG, LANGS, UserError, t
from core.store import Store

def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="data home (default: $SGCL_HOME or ./sgcl-data)")
    common.add_argument("--user", help="act as this existing user (default: the 'system' admin)")
    common.add_argument("--lang", choices=LANGS, default=DEFAULT_LANG, help="language of messages")
    return common


def open_store(args: argparse.Namespace) -> Store:
    return Store(args.home) if args.home else Store()


def actor_for(store: Store, args: argparse.Namespace) -> Actor:
    """``--user NAME`` acts with that account's role; without it the CLI is the system admin."""
    if not args.user:
        return SYSTEM
    row = store.query_one("SELECT username, role, active FROM users WHERE username = ?", (args.user,))
    if row is None or not row["active"]:
        raise UserError("cli.unknown_user", user=args.user)
    return Actor(row["username"], row["role"])


# ---- import-folder ------------------------------------------------------------------------------
def add_import_folder(sub, common) -> None:
    p = sub.add_parser("import-folder", parents=[common],
                       help="import an ImageNet-style folder: <root>/<label>/* or <root>/{train,test}/<label>/*")
    p.add_argument("root", type=Path)
    p.add_argument("--create-labels", action="store_true",
                   help="propose and approve a label for each folder that matches none")
    p.set_defaults(func=run_import_folder)


def run_import_folder(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from core import images
    store = open_store(args)
    actor = actor_for(store, args)
    bar = tqdm(total=0, unit="img", file=sys.stderr, dynamic_ncols=True)

    def progress(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.update(done - bar.n)

    report = images.import_folder(store, actor, args.root, create_labels=args.create_labels, progress=progress)
    bar.close()
    for r in report.results:
        if r.status in ("error", "conflict"):
            print(f"{r.status}: {r.name}: {r.message(args.lang)}")
    counts = report.counts
    print(f"labels: {len(report.labels)} matched ({len(report.created)} created), "
          f"{len(report.unmatched)} folders without a label")
    print(f"added {counts['added']}, duplicates {counts['duplicate']}, conflicts {counts['conflict']}, "
          f"errors {counts['error']} in {report.seconds:.1f} s "
          f"({report.images_per_second:.0f} images/s)")
    return 1 if report.unmatched or counts["error"] else 0


# ---- export -------------------------------------------------------------------------------------
def add_export(sub, common) -> None:
    p = sub.add_parser("export", parents=[common],
                       help="export approved and trained labels' images as train/ + test/ folders with images.csv")
    p.add_argument("dest", type=Path, help="a .zip file, or a folder that does not exist yet")
    p.add_argument("--format", choices=("zip", "folder"), help="default: zip when dest ends in .zip")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from core import images
    store = open_store(args)
    fmt = args.format or ("zip" if args.dest.suffix.lower() == ".zip" else "folder")
    started = time.perf_counter()
    result = images.export_dataset(store, actor_for(store, args), args.dest, fmt=fmt)
    print(f"exported {result.n_images} images of {result.n_labels} labels to {result.path} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


# ---- init ------------------------------------------------------------------------------------------
def add_init(sub, common) -> None:
    p = sub.add_parser("init", parents=[common],
                       help="create/migrate the data home, seed the starter glossary and the first admin")
    p.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    """What `make run` does before starting the app, so the first-start admin password is printed on the
    console at start-up rather than when the first browser connects."""
    from core.glossary_store import seed_if_empty
    from core.users import ensure_admin

    store = open_store(args)
    ensure_admin(store)
    added = seed_if_empty(store)
    print(f"data home {store.home} ready (schema v{store.schema_version}"
          + (f", {added} starter glossary entries" if added else "") + ")")
    return 0


# ---- experiment (core/experiment.py; torch is imported only when it runs) -----------------------
def add_experiment(sub, common) -> None:
    from core.experiment import add_experiment_parser
    add_experiment_parser(sub, common)


# Register a command with one line here.
COMMANDS = [
    add_init,
    add_import_folder,
    add_export,
    add_experiment,
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
