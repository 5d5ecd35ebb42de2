"""dualrs.certify_dataset: a user's model on a user's Dataset, with the pipeline's noise and resumable table."""
import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

import dualrs
from closed_form import HalfSpace
from dualrs.seeding import sample_generator
from dualrs.smoothing import ABSTAIN, Smooth

SIGMA = 0.5
OFFSETS = [0.6, -0.3, 0.0, 0.2, -0.8, 0.4]  # x_0: the signed distance to the half-space f's boundary
LABELS = [1, 0, 1, 1, 0, 0]  # the last one disagrees with f
SETTINGS = dict(n0=100, n=20000, alpha=0.001, batch_size=5000, seed=7)
COHEN_COLUMNS = ["idx", "label", "predict", "radius", "correct", "time"]
SAME = ["idx", "label", "predict", "radius", "correct"]  # all but the wall time


class Points(Dataset):
    """Inputs of shape (1, 2, 2) whose first pixel is the offset; ``stop_at`` interrupts the run there."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.fetched = stop_at, []

    def __len__(self) -> int:
        return len(OFFSETS)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.stop_at:
            raise KeyboardInterrupt
        self.fetched.append(i)
        x = torch.zeros(1, 2, 2, dtype=torch.float64)
        x[0, 0, 0] = OFFSETS[i]
        return x, LABELS[i]


@pytest.fixture(scope="module")
def model() -> HalfSpace:
    """f(x) = 1[x_0 > 0]: the smoothed classifier's exact radius is |x_0| (class 1 above, 0 below)."""
    return HalfSpace(torch.tensor([1.0, 0.0, 0.0, 0.0]), 0.0)


def test_radii_and_predictions_of_a_known_classifier(model, tmp_path):
    out = tmp_path / "certificates.tsv"
    table = dualrs.certify_dataset(model, Points(), SIGMA, out=out, device="cpu", **SETTINGS)
    assert list(table.columns) == COHEN_COLUMNS
    assert open(out).readline().rstrip("\n").split("\t") == COHEN_COLUMNS
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t"), table)
    assert table["idx"].tolist() == list(range(len(OFFSETS)))
    expected = [1 if x > 0 else 0 if x < 0 else ABSTAIN for x in OFFSETS]
    assert table["predict"].tolist() == expected
    assert table["correct"].tolist() == [int(p == y) for p, y in zip(expected, LABELS)]
    for offset, radius in zip(OFFSETS, table["radius"]):
        assert abs(offset) - 0.05 < radius <= abs(offset)  # a lower confidence bound, tight at n = 20000

    smooth = Smooth(model, 2, SIGMA)  # the pipeline's per-input noise: the same certificates, draw for draw
    for i, radius in enumerate(table["radius"]):
        bound = smooth.certify_bound(Points()[i][0], SETTINGS["n0"], SETTINGS["n"], SETTINGS["alpha"],
                                     SETTINGS["batch_size"], sample_generator(SETTINGS["seed"], "certify", i))
        assert (bound.prediction, bound.radius) == (table["predict"][i], radius)


def test_every_kth_item_without_an_output_file(model):
    table = dualrs.certify_dataset(model, Points(), SIGMA, every=2, **SETTINGS)
    assert table["idx"].tolist() == [0, 2, 4]


def test_resuming_after_losing_the_last_rows_gives_the_same_table(model, tmp_path):
    full = dualrs.certify_dataset(model, Points(), SIGMA, out=tmp_path / "full.tsv", **SETTINGS)
    out = tmp_path / "resumed.tsv"
    with pytest.raises(KeyboardInterrupt):
        dualrs.certify_dataset(model, Points(stop_at=4), SIGMA, out=out, **SETTINGS)
    partial = out.with_name("resumed.tsv.partial")
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + 4
    partial.write_text("\n".join(lines[:-2]) + "\n")  # the last two rows are lost
    points = Points()
    resumed = dualrs.certify_dataset(model, points, SIGMA, out=out, num_classes=2, **SETTINGS)
    assert points.fetched == [2, 3, 4, 5]
    pd.testing.assert_frame_equal(resumed[SAME], full[SAME])
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t")[SAME], full[SAME])
    assert not partial.exists()
