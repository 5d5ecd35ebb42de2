import errno
import json
import math
import os
import re
import stat

import pandas as pd
import pytest
import safetensors.torch
import torch

from dualrs.io import load_checkpoint, save_checkpoint
from dualrs.models import read_foreign_state_dict
from dualrs.tables import (DUAL_COLUMNS, GLOBAL_COLUMNS, ROUTER_COLUMNS, OutputError, ResumableTable, atomic_file,
                           concat_tables, read_table, resumable_table, row_problem, write_table)
from dualrs.models import create_model


def test_checkpoint_round_trip_rebuilds_the_same_function(tmp_path):
    torch.manual_seed(0)
    model = create_model("digits_cnn", 10, 1).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"arch": "digits_cnn", "num_classes": 10, "in_chans": 1, "sigma": 0.5})
    loaded, meta = load_checkpoint(path)
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert meta["sigma"] == 0.5
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_checkpoint(tmp_path / "nothere.safetensors")
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, create_model("digits_cnn", 10, 1), {"arch": "digits_cnn", "num_classes": 10, "in_chans": 1})
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**meta, "num_classes": 3}))
    with pytest.raises(ValueError, match="does not match architecture"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="lacks"):
        save_checkpoint(path, create_model("digits_cnn", 10, 1), {"arch": "digits_cnn"})


def _truncated_safetensors(path):
    safetensors.torch.save_file({"w": torch.zeros(8)}, path)
    path.write_bytes(path.read_bytes()[:-4])


def _broken_zip(path):
    torch.save({"w": torch.zeros(8)}, path)
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(("name", "write", "problem"), [
    ("w.safetensors", _truncated_safetensors,
     "is not a safetensors or PyTorch checkpoint, or is truncated: SafetensorError: Error while deserializing header"),
    ("w.pt", lambda path: path.write_bytes(b""),
     "is not a safetensors or PyTorch checkpoint, or is truncated: the file is empty"),
    ("w.pt", _broken_zip,
     "is not a safetensors or PyTorch checkpoint, or is truncated: RuntimeError: PytorchStreamReader failed"),
    ("w.pt", lambda path: torch.save([torch.zeros(8)], path), "is not a state dict of tensors: it holds a list"),
])
def test_a_foreign_weight_file_that_does_not_parse_is_one_error_naming_it(tmp_path, name, write, problem):
    path = tmp_path / name
    write(path)
    with pytest.raises(ValueError, match=f"^the --weights file {re.escape(str(path))} {re.escape(problem)}") as error:
        read_foreign_state_dict(path, "the --weights file")
    assert "\n" not in str(error.value)


def test_a_foreign_state_dict_is_read_from_either_format_and_its_wrapper(tmp_path):
    weights = {"a": torch.arange(3.0)}
    safetensors.torch.save_file(weights, tmp_path / "w.safetensors")
    torch.save({"state_dict": weights, "epoch": 3}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        assert torch.equal(read_foreign_state_dict(tmp_path / name)["a"], weights["a"])


def _row(i):
    return {"idx": i, "label": i % 3, "predict": i % 3, "radius": 0.125 * i, "correct": 1, "time": 0.5}


def test_resumable_table_survives_an_interruption_mid_row(tmp_path):
    out = tmp_path / "cert.tsv"
    with pytest.raises(KeyboardInterrupt):
        with resumable_table(out, GLOBAL_COLUMNS) as table:
            for i in range(5):
                table.append(_row(i))
            raise KeyboardInterrupt
    assert not out.exists()
    partial = out.with_name("cert.tsv.partial")
    partial.write_text(partial.read_text() + "5\t2\t2\t0.6")  # a row cut off by the interruption
    with pytest.warns(UserWarning, match=r"dropping the incomplete last line '5\\t2\\t2\\t0\.6'"), \
            ResumableTable(out, GLOBAL_COLUMNS) as table:
        assert table.done == {0, 1, 2, 3, 4}
        for i in (7, 5, 6):
            table.append(_row(i))
        table.finish()
    frame = read_table(out)
    assert list(frame["idx"]) == list(range(8)) and not partial.exists()
    pd.testing.assert_frame_equal(frame, pd.DataFrame([_row(i) for i in range(8)]), check_dtype=False)


def test_resumable_table_rejects_other_columns(tmp_path):
    out = tmp_path / "cert.tsv"
    out.with_name("cert.tsv.partial").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="delete it to restart"):
        ResumableTable(out, GLOBAL_COLUMNS)


def test_concat_tables_sorts_and_refuses_overlapping_shards(tmp_path):
    shards = []
    for k, ids in enumerate(([2, 0], [1, 3])):
        shards.append(tmp_path / f"s{k}.tsv")
        pd.DataFrame([_row(i) for i in ids]).to_csv(shards[-1], sep="\t", index=False)
    concat_tables(shards, tmp_path / "all.tsv")
    assert list(read_table(tmp_path / "all.tsv")["idx"]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="overlap"):
        concat_tables([shards[0], shards[0]], tmp_path / "bad.tsv")


# ------------------------------------------------------------------ metadata paths, file modes, atomic writes


def _save(path, **meta):
    save_checkpoint(path, create_model("digits_cnn", 10, 1), {"arch": "digits_cnn", "num_classes": 10, "in_chans": 1,
                                                              **meta})


@pytest.mark.parametrize("name", ["clf_sigma0.25", "model", "m.pt", "m.json"])
def test_checkpoint_names_that_could_share_a_metadata_file_are_refused(tmp_path, name):
    """``clf_sigma0.25`` and ``clf_sigma0.5`` would both keep their metadata in ``clf_sigma0.json``, ``model``
    and ``model.safetensors`` both in ``model.json``, ``m.json`` in itself: only ``*.safetensors`` is accepted."""
    with pytest.raises(ValueError, match=rf"checkpoint .*{re.escape(name)} must be named \*\.safetensors"):
        _save(tmp_path / name, sigma=0.25)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="must be named"):
        load_checkpoint(tmp_path / name)


def test_every_checkpoint_has_its_own_metadata(tmp_path):
    for sigma in (0.25, 0.5):
        _save(tmp_path / f"clf_sigma{sigma}.safetensors", sigma=sigma)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "clf_sigma0.25.json", "clf_sigma0.25.safetensors", "clf_sigma0.5.json", "clf_sigma0.5.safetensors"]
    for sigma in (0.25, 0.5):
        assert load_checkpoint(tmp_path / f"clf_sigma{sigma}.safetensors")[1]["sigma"] == sigma


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_written_files_get_the_mode_the_umask_gives(tmp_path, umask):
    """Checkpoints, their metadata, tables, partial files and their settings are readable by whoever
    the umask lets read (0644 under 022), as files written with open() are, not 0600."""
    _save(tmp_path / "m.safetensors")
    write_table(tmp_path / "t.tsv", pd.DataFrame([_row(0)]))
    out = tmp_path / "c.tsv"
    with ResumableTable(out, GLOBAL_COLUMNS, settings={"n": 1}) as table:
        table.append(_row(0))
    partial = out.with_name("c.tsv.partial")
    partial.write_text(partial.read_text() + "1\t1")  # cut off: resuming rewrites the partial file
    with pytest.warns(UserWarning, match="dropping the incomplete last line"), \
            ResumableTable(out, GLOBAL_COLUMNS, settings={"n": 1}) as table:
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (partial, out.with_name("c.tsv.partial.json"))}
        table.append(_row(1))
        table.finish()
    modes |= {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.suffix != ".lock"}
    assert set(modes) >= {"m.safetensors", "m.json", "t.tsv", "c.tsv", "c.tsv.partial", "c.tsv.partial.json"}
    assert modes == dict.fromkeys(modes, 0o666 & ~umask)


def test_a_denoiser_folder_gets_the_modes_the_umask_gives(tmp_path, umask):
    """A denoiser is written under a private temporary folder (0700, weights 0600) and renamed into place."""
    from diffusers import DDPMScheduler

    from dualrs.denoise import build_digits_unet, save_denoiser

    save_denoiser(build_digits_unet(), DDPMScheduler(), tmp_path / "denoiser", conditioning={"timestep_scale": 1.0})
    paths = [tmp_path / "denoiser", *(tmp_path / "denoiser").rglob("*")]
    assert len(paths) > 5
    assert {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths} == {
        p.relative_to(tmp_path).as_posix(): (0o777 if p.is_dir() else 0o666) & ~umask for p in paths}


def test_concurrent_atomic_writes_of_one_path_never_mix(tmp_path):
    """Two writers of one file (two ``merge`` or ``report`` runs): each writes a file of its own, the
    last rename wins and the result is one writer's whole content."""
    path = tmp_path / "t.tsv"
    with atomic_file(path) as first, first.open("w") as a:
        a.write("a" * 1000)
        with atomic_file(path) as second:
            second.write_text("b" * 10)
        a.write("a" * 1000)
    assert path.read_text() == "a" * 2000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.tsv"]


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    """A full disk mid-write: the error reaches the caller, the previous version stays whole."""
    path = tmp_path / "t.tsv"
    write_table(path, pd.DataFrame([_row(0)]))
    before = path.read_bytes()
    with pytest.raises(OSError, match="No space left"):
        with atomic_file(path) as tmp, tmp.open("w") as handle:
            handle.write("half a table")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["t.tsv"]


def test_a_symlinked_output_is_replaced_not_written_through(tmp_path):
    """An output that is a link (e.g. into a DVC cache, whose files must not change) becomes the new
    file; the link's target keeps its content."""
    target = tmp_path / "cache" / "old.tsv"
    target.parent.mkdir()
    target.write_text("cached\n")
    out = tmp_path / "c.tsv"
    out.symlink_to(target)
    with resumable_table(out, GLOBAL_COLUMNS) as table:
        table.append(_row(0))
    assert not out.is_symlink() and read_table(out)["idx"].tolist() == [0]
    assert target.read_text() == "cached\n"


def test_router_rows_with_expert_names_resume(tmp_path):
    """The router's ``expert`` column holds names (empty on abstention), not numbers."""
    row = {"idx": 0, "label": 3, "predict": 3, "expert": "noise-0.25", "sigma": 0.25, "radius": 0.1, "r_sigma": 0.2,
           "r_c": 0.1, "correct": 1, "time": 0.5}
    abstain = {**row, "idx": 1, "predict": -1, "expert": "", "sigma": math.nan, "radius": 0.0, "correct": 0}
    out = tmp_path / "router.tsv"
    with ResumableTable(out, ROUTER_COLUMNS) as table:
        table.append(row), table.append(abstain)
    with ResumableTable(out, ROUTER_COLUMNS) as table:
        assert table.done == {0, 1}
        table.finish()
    assert read_table(out)["expert"].fillna("").tolist() == ["noise-0.25", ""]


GOOD = dict(zip(DUAL_COLUMNS, "60 7 7 0.5 0.3 0.4 0.3 1 0.01".split()))


@pytest.mark.parametrize(("change", "problem"), [
    ({"radius": "nan"}, "radius 'nan' is not finite"),
    ({"radius": "inf"}, "radius 'inf' is not finite"),
    ({"r_c": "-0.1"}, "r_c is negative"),
    ({"idx": "-60"}, "idx is negative"),
    ({"label": "7.0"}, "label '7.0' is not an integer"),
    ({"predict": "-2", "correct": "0"}, "predict is neither a class nor -1 (abstain)"),
    ({"sigma": "nan"}, "sigma is NaN, but the row does not abstain"),
    ({"sigma": "0"}, "sigma is not positive"),
    ({"predict": "-1", "correct": "0"}, "radius is not 0, but the row abstains"),
    ({"correct": "0"}, "correct is 0, but predict and label agree"),
    ({"idx": "61"}, "idx 61 is not one of the 3 inputs of this output"),
    ({"label": "6", "predict": "6"}, "label 6, but input 60 has label 7"),
])
def test_impossible_rows_are_named(change, problem):
    expected = {0: 0, 60: 7, 120: 6}
    assert row_problem(GOOD, expected) is None
    assert row_problem({**GOOD, "predict": "-1", "sigma": "nan", "radius": "0.0", "correct": "0"}, expected) is None
    assert row_problem({**GOOD, **change}, expected) == problem


def test_finish_refuses_a_partial_file_that_lost_rows_or_lacks_inputs(tmp_path):
    """The table counts as complete only if the partial file holds every row this writer wrote (none lost
    to another process rewriting it) and one row per input."""
    out = tmp_path / "c.tsv"
    with ResumableTable(out, GLOBAL_COLUMNS, expected={0: 0, 1: 1, 2: 2}) as table:
        for i in range(3):
            table.append(_row(i))
        partial = out.with_name("c.tsv.partial")
        partial.write_text("\n".join(partial.read_text().splitlines()[:3]) + "\n")  # row 2 lost
        with pytest.raises(OutputError, match=r"c\.tsv\.partial holds 2 rows, but 3 were written to it"):
            table.finish()
    assert not out.exists()
    with ResumableTable(out, GLOBAL_COLUMNS, expected={0: 0, 1: 1, 2: 2}) as table:
        with pytest.raises(ValueError, match=r"c\.tsv\.partial lacks 1 of its 3 inputs \(idx \[2\]"):
            table.finish()
    assert not out.exists()


def test_fingerprints_skip_hidden_entries_and_name_missing_images(tmp_path):
    """A killed write's ``.x.tmp`` or a hub download's ``.cache`` is not part of a model; an image the
    dataset lists but that is gone is one error naming it."""
    from dualrs.data import ImageListDataset
    from dualrs.fingerprint import path_digest, sample_files_digest

    folder = tmp_path / "denoiser"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "weights").write_bytes(b"w")
    before = path_digest(folder)
    (folder / ".weights.1234.tmp").write_bytes(b"half")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "stamp").write_text("1")
    assert path_digest(folder) == before
    (folder / "unet" / "weights").write_bytes(b"v")
    assert path_digest(folder) != before
    with pytest.raises(FileNotFoundError, match=r"the dataset lists .*gone\.png, which does not exist"):
        sample_files_digest(ImageListDataset([(str(tmp_path / "gone.png"), 0)], transform=None))
