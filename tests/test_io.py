import json

import pandas as pd
import pytest
import torch

from dualrs.io import load_checkpoint, save_checkpoint
from dualrs.tables import GLOBAL_COLUMNS, ResumableTable, concat_tables, read_table, resumable_table
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
    table = ResumableTable(out, GLOBAL_COLUMNS)
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
