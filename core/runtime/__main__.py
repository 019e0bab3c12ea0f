"""``python -m core.runtime BUNDLE IMAGE... [--csv]``: classify images with a bundle, no torch needed."""
from __future__ import annotations

import argparse
import sys

from core.runtime.folder import COLUMNS, classify_paths, write_csv


def main(argv: list[str] | None = None) -> int:
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
