"""Repeatability: the same commit, config and machine give the same models, certificates and tables.

Only wall time may differ between two runs: the ``time`` column of a certificate TSV and the
``s/input`` column (its mean) of a table are left out of the comparison, and nothing else is
(filelock's empty ``*.lock`` files beside the outputs are not results and are not compared).
"""
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dualrs.data import prepare_dataset
from dualrs.seeding import deterministic
from pipeline import REPO, snakemake

TINY = REPO / "tests" / "configs" / "tiny.yaml"
#: Wall-time columns: seconds per input in a certificate TSV, and its mean in a table.
TIMING_COLUMNS = frozenset({"time", "s/input"})


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
    """Paths (relative) under ``folders`` that exist in only one of ``a``, ``b`` or differ outside timing columns."""
    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for f in folders for p in (root / f).rglob(pattern)
                if p.is_file() and p.suffix != ".lock"}

    names_a, names_b = files(a), files(b)
    assert names_a, f"nothing under {folders} in {a}"
    return sorted((names_a ^ names_b) | {n for n in names_a & names_b if untimed(a / n) != untimed(b / n)})


def test_timing_columns_are_the_only_ones_left_out(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text("idx\tradius\ttime\n0\t0.5\t0.01\n")
    assert untimed(tsv) == "idx\tradius\n0\t0.5\n"
    md = tmp_path / "x.md"
    md.write_text("note\n\n| method | ACR | s/input |\n|:--|:--|:--|\n| dual | 0.3 | 0.02 |")
    assert untimed(md) == "note\n\n| method | ACR |\n|:--|:--|\n| dual | 0.3 |"
    tex = tmp_path / "x.tex"
    tex.write_text("\\toprule\nmethod & ACR & s/input \\\\\ndual & 0.3 & 0.02 \\\\\n")
    assert untimed(tex) == "\\toprule\nmethod & ACR \\\\\ndual & 0.3 \\\\"
    js = tmp_path / "x.json"
    js.write_text(json.dumps({"dual": {"ACR": 0.3, "s/input": 0.02}}))
    assert untimed(js) == json.dumps({"dual": {"ACR": 0.3}})


def _train_denoiser(root: Path, out: Path) -> bytes:
    """``dualrs train-denoiser`` in a fresh process; the UNet's weight file."""
    subprocess.run([sys.executable, "-m", "dualrs", "train-denoiser", "--dataset", "digits", "--root", str(root),
                    "--steps", "3", "--batch-size", "8", "--lr", "0.002", "--seed", "0", "--threads", "1",
                    "--device", "cpu", "--out", str(out)], check=True, capture_output=True)
    return (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()


@pytest.mark.slow
def test_a_denoiser_trained_in_two_processes_has_the_same_weights(tmp_path):
    """A fresh torch process starts from a random seed: every random draw of a job must derive from ``--seed``."""
    prepare_dataset("digits", tmp_path / "data", seed=0)
    assert _train_denoiser(tmp_path / "data", tmp_path / "a") == _train_denoiser(tmp_path / "data", tmp_path / "b")


def test_deterministic_seeds_torch_and_restricts_it_to_deterministic_kernels():
    threads, enabled = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        deterministic(3, threads=1)
        first = torch.rand(4)
        assert torch.are_deterministic_algorithms_enabled() and torch.get_num_threads() == 1
        deterministic(3, threads=1)
        assert torch.equal(first, torch.rand(4))
    finally:
        torch.use_deterministic_algorithms(enabled)
        torch.set_num_threads(threads)


def test_deterministic_kernels_in_warn_only_mode_without_loading_torch_compile():
    """A job's setup switches the kernels as torch.use_deterministic_algorithms(True, warn_only=True)
    does, without importing torch._inductor (seconds per job); a process that has loaded it gets the
    public call, which also makes torch.compile deterministic."""
    setup = "import sys, torch; from dualrs.seeding import deterministic; "
    state = "torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()"
    fresh = setup + f"deterministic(0, 1); print({state}, 'torch._inductor' in sys.modules)"
    compiled = setup + f"import torch._inductor.config as c; deterministic(0, 1); print({state}, c.deterministic)"
    for code, expected in ((fresh, "True True False"), (compiled, "True True True")):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert result.stdout.split() == expected.split(), (code, result.stdout, result.stderr[-2000:])


@pytest.fixture
def two_runs(tmp_path):
    """The tiny DDPM experiment run twice: every kind of training job (DDPM, classifier, estimator, routing and
    finetuning), every kind of certificate and the experiment's table."""
    runs = [tmp_path / "a", tmp_path / "b"]
    for workdir in runs:
        shutil.copytree(REPO / "config", workdir / "config")
        snakemake(workdir, "results/tables/tiny_dds.csv", "--cores", "2", "--configfile", str(TINY))
    return runs


@pytest.mark.slow
def test_two_runs_give_the_same_models_certificates_and_tables(two_runs):
    a, b = two_runs
    assert differing_files(a, b, ["results/tiny_dds/models"], "*.safetensors") == []
    assert differing_files(a, b, ["results/tables", "results/tiny_dds/certify", "results/tiny_dds/labels"]) == []
