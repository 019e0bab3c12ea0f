"""Classify images with a bundle, no torch needed (what a line PC runs):

    python -m core.runtime BUNDLE IMAGE... [--csv]
    python -m core.runtime predict-folder DIR --bundle B [--csv out.csv] [--sort-into OUT]
    python -m core.runtime watch DIR --bundle B --csv line.csv [--sort-into OUT] [--state S]

(``python -m core.cli predict-folder`` / ``watch`` on the app's machine run the same code.)"""
from __future__ import annotations

import argparse
import sys

from core.runtime.folder import COLUMNS, classify_paths, write_csv


def folder_main(argv: list[str], watch: bool) -> int:
    from pathlib import Path

    from core.runtime.bundle import BadBundle, Bundle
    from core.runtime.folder import Watcher, predict_folder

    parser = argparse.ArgumentParser(prog=f"python -m core.runtime {'watch' if watch else 'predict-folder'}")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bundle", required=True, type=Path)
    parser.add_argument("--csv", type=Path, required=watch)
    parser.add_argument("--sort-into", type=Path)
    if watch:
        parser.add_argument("--state", type=Path)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder}: not a folder", file=sys.stderr)
        return 2
    try:
        bundle = Bundle.open(args.bundle)
    except (BadBundle, OSError) as exc:
        print(f"error: {args.bundle}: {exc}", file=sys.stderr)
        return 2
    if watch:
        w = Watcher(bundle, args.folder, args.csv, args.sort_into, args.state,
                    on_row=lambda r: print(f"{r['file']}\t{r['class'] or '-'}\t{r['unknown']}\t{r['error']}", flush=True))
        try:
            w.run()
        except KeyboardInterrupt:
            pass
        return 0
    rows = predict_folder(bundle, args.folder, args.csv, args.sort_into)
    if args.csv is None:
        write_csv(sys.stdout, rows)
    return 1 if any(r["error"] for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("predict-folder", "watch"):
        return folder_main(argv[1:], watch=argv[0] == "watch")
    parser = argparse.ArgumentParser(prog="python -m core.runtime",
                                     description="classify images with an sgcl model bundle (onnxruntime, no torch)")
    parser.add_argument("bundle", help="a bundle zip from `python -m core.cli export-model`")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    args = parser.parse_args(argv)
    from core.runtime.bundle import BadBundle, Bundle

    try:
        bundle = Bundle.open(args.bundle)
    except (BadBundle, OSError) as exc:
        print(f"error: {args.bundle}: {exc}", file=sys.stderr)
        return 2
    rows = classify_paths(bundle, args.images)
    if args.csv:
        write_csv(sys.stdout, rows)
    else:
        widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
        print("  ".join(c.ljust(widths[c]) for c in COLUMNS))
        for r in rows:
            print("  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
