"""Two runs of the pipeline, compared leaving out only their wall-time columns.

`python scripts/compare_runs.py RUN_A RUN_B [FOLDER ...]` compares the files under FOLDER (default:
results/tables and results/*/{certify,labels,router,models}) of two
checkouts that ran the same target: certificates, labels and tables (CSV, TSV, Markdown, LaTeX, JSON)
without their `time` and `s/input` columns, checkpoints byte for byte. It prints each file that differs or
exists in one run only, and exits 1 if there is any (README, "Reproducibility").
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

#: Wall-time columns: seconds per input in a certificate TSV, and its mean in a table.
TIMING_COLUMNS = frozenset({"time", "s/input"})
DEFAULT_FOLDERS = ("results/tables", "results/*/certify", "results/*/labels", "results/*/router", "results/*/models")


def _delimited(text: str, delimiter: str) -> str:
    """A CSV/TSV text without its timing columns."""
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows([[row[i] for i in keep] for row in rows])
    return out.getvalue()


def _rendered(text: str, separator: str, row_end: str) -> str:
    """A Markdown (``|``) or LaTeX (``&``) table without its timing columns; other lines as they are."""
    lines, drop = text.splitlines(), None
    for k, line in enumerate(lines):
        if separator not in line:
            continue
        body = line.rstrip().removesuffix(row_end)
        cells = body.split(separator)
        if drop is None:
            drop = [i for i, cell in enumerate(cells) if cell.strip() in TIMING_COLUMNS]
        lines[k] = separator.join(c for i, c in enumerate(cells) if i not in drop) + line[len(body):]
    return "\n".join(lines)


def _json(value):
    """A JSON value without timing keys, at any depth."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items() if k not in TIMING_COLUMNS}
    return [_json(v) for v in value] if isinstance(value, list) else value


def untimed(path: Path) -> str | bytes:
    """The content of a certificate or table file with its wall-time columns left out (other files: the bytes)."""
    if path.suffix in (".tsv", ".csv"):
        return _delimited(path.read_text(), "\t" if path.suffix == ".tsv" else ",")
    if path.suffix == ".md":
        return _rendered(path.read_text(), "|", "")
    if path.suffix == ".tex":
        return _rendered(path.read_text(), "&", "\\\\")
    if path.suffix == ".json":
        return json.dumps(_json(json.loads(path.read_text())), sort_keys=True)
    return path.read_bytes()


def differing_files(a: Path, b: Path, folders: list[str], pattern: str = "*") -> list[str]:
    """Paths (relative) under ``folders`` (glob patterns) that exist in only one of ``a``, ``b`` or differ
    outside timing columns; locks and unfinished tables (``.lock``, ``.partial``) are not results."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for f in folders for folder in root.glob(f) for p in folder.rglob(pattern)
                if p.is_file() and not p.name.endswith((".lock", ".partial", ".partial.json"))}

    names_a, names_b = files(a), files(b)
    if not names_a:
        raise FileNotFoundError(f"nothing under {', '.join(folders)} in {a}")
    return sorted((names_a ^ names_b) | {n for n in names_a & names_b if untimed(a / n) != untimed(b / n)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path, help="checkout of the first run")
    parser.add_argument("run_b", type=Path, help="checkout of the second run")
    parser.add_argument("folders", nargs="*", default=list(DEFAULT_FOLDERS),
                        help="folders to compare, glob patterns relative to each run (default: %(default)s)")
    args = parser.parse_args()
    differing = differing_files(args.run_a, args.run_b, args.folders)
    for name in differing:
        print(name)
    print(f"{len(differing)} file(s) differ outside the timing columns")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
