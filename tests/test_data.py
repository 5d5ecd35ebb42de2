"""Tests of the dataset registry on data the tests build themselves (no network)."""

from __future__ import annotations

import hashlib
import math
import json
import pickle
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image
from torchvision.datasets import CIFAR10

from dualrs.data import DatasetInfo, dataset_info, load_split, prepare_dataset

# ---------------------------------------------------------------------- digits


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    prepare_dataset("digits", root, seed=0)
    return root


def test_digits_info() -> None:
    assert dataset_info("digits") == DatasetInfo(num_classes=10, input_shape=(1, 8, 8))


def test_digits_split_files(digits_root: Path) -> None:
    train, test = _read_npz(digits_root / "train.npz"), _read_npz(digits_root / "test.npz")
    assert len(train["y"]) + len(test["y"]) == 1797
    assert len(test["y"]) == math.ceil(0.3 * 1797)  # sklearn rounds the test size up
    assert not set(train["index"]) & set(test["index"])
    assert sorted(np.concatenate([train["index"], test["index"]])) == list(range(1797))
    for arrays in (train, test):
        assert arrays["x"].dtype == np.float32 and arrays["y"].dtype == np.int64
        assert arrays["x"].shape == (len(arrays["y"]), 1, 8, 8)
        assert arrays["x"].min() == 0.0 and arrays["x"].max() == 1.0
    # Stratified: each class's share of the test split matches its share overall.
    all_y = np.concatenate([train["y"], test["y"]])
    overall = np.bincount(all_y, minlength=10) / len(all_y)
    in_test = np.bincount(test["y"], minlength=10) / len(test["y"])
    assert np.abs(overall - in_test).max() < 0.01


def test_digits_pixels_match_sklearn(digits_root: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    test = _read_npz(digits_root / "test.npz")
    np.testing.assert_allclose(test["x"][:, 0], digits.images[test["index"]] / 16.0, rtol=1e-6)
    np.testing.assert_array_equal(test["y"], digits.target[test["index"]])


def test_digits_load_split(digits_root: Path) -> None:
    train, test = load_split("digits", digits_root, "train"), load_split("digits", digits_root, "test")
    assert len(train) + len(test) == 1797
    x, y = test[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert isinstance(y, int) and 0 <= y < 10
    np.testing.assert_array_equal(test.tensors[1].numpy(), _read_npz(digits_root / "test.npz")["y"])
    manifest = json.loads((digits_root / "READY").read_text())
    assert manifest["name"] == "digits"
    assert manifest["options"] == {"test_fraction": 0.3}  # load-time options (resolution) are not recorded
    assert manifest["num_items"] == {"train": len(train), "test": len(test)}


@pytest.mark.parametrize("resolution", [8, 16])
def test_digits_contrast_scales_each_image_by_its_index(digits_root: Path, resolution: int) -> None:
    contrast = [0.5, 1.0, 0.25]
    plain = load_split("digits", digits_root, "test", resolution=resolution)
    mixed = load_split("digits", digits_root, "test", resolution=resolution, contrast=contrast)
    index = _read_npz(digits_root / "test.npz")["index"]
    factors = torch.tensor(contrast)[torch.from_numpy(index % 3)]
    torch.testing.assert_close(mixed.tensors[0], plain.tensors[0] * factors[:, None, None, None], rtol=0, atol=0)
    torch.testing.assert_close(mixed.tensors[1], plain.tensors[1])
    assert (mixed.tensors[0].amax(dim=(1, 2, 3)) <= factors).all()  # each image within [0, its factor]
    assert set((factors.unique() * 4).tolist()) == {1.0, 2.0, 4.0}  # all three in the split


@pytest.mark.parametrize("contrast", [[], [0.0], [1.5], [0.5, -1.0], 0.5, [True], ["0.5"]])
def test_digits_contrast_outside_0_1_is_refused(digits_root: Path, contrast) -> None:
    with pytest.raises(ValueError, match="option 'contrast' must be a non-empty list of factors in \\(0, 1\\]"):
        load_split("digits", digits_root, "test", contrast=contrast)


def test_digits_split_is_seeded(tmp_path: Path, digits_root: Path) -> None:
    reference = _read_npz(digits_root / "test.npz")["index"]
    prepare_dataset("digits", tmp_path / "same", seed=0)
    prepare_dataset("digits", tmp_path / "same", seed=0)  # idempotent
    prepare_dataset("digits", tmp_path / "other", seed=1)
    np.testing.assert_array_equal(_read_npz(tmp_path / "same" / "test.npz")["index"], reference)
    assert not np.array_equal(_read_npz(tmp_path / "other" / "test.npz")["index"], reference)
    assert not list(tmp_path.glob("*/.*.tmp"))


def test_digits_test_fraction_and_stale_options(tmp_path: Path, digits_root: Path) -> None:
    prepare_dataset("digits", tmp_path, seed=0, test_fraction=0.5)
    assert len(load_split("digits", tmp_path, "test", test_fraction=0.5)) == math.ceil(0.5 * 1797)
    with pytest.raises(ValueError, match="test_fraction=0.5"):
        load_split("digits", tmp_path, "test")
    with pytest.raises(ValueError, match="test_fraction"):
        prepare_dataset("digits", tmp_path, seed=0, test_fraction=1.5)


def test_load_before_prepare(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prepare_dataset"):
        load_split("digits", tmp_path, "test")


# ------------------------------------------------------------------ registry


def test_unknown_names(digits_root: Path) -> None:
    with pytest.raises(ValueError, match=r"'mnist'.*cifar10, digits, imagenet"):
        dataset_info("mnist")
    with pytest.raises(ValueError, match=r"'val'.*train, test"):
        load_split("digits", digits_root, "val")
    with pytest.raises(ValueError, match=r"test_frac\b.*valid: test_fraction"):
        dataset_info("digits", test_frac=0.2)
    with pytest.raises(ValueError, match=r"every.*valid: download, test_every"):
        prepare_dataset("cifar10", digits_root, seed=0, every=3)


# -------------------------------------------------------------------- cifar10

_CIFAR_BATCHES = {"data_batch_1": 3, "data_batch_2": 2, "data_batch_3": 2, "data_batch_4": 2,
                  "data_batch_5": 1, "test_batch": 5}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """A tiny archive in the real CIFAR-10 python format, extracted under tmp_path.

    The real files are Python 2 pickles of dicts whose str keys load as str with
    ``encoding="latin1"`` (what torchvision uses); ``data`` is uint8 N x 3072
    (R plane, G plane, B plane, each row-major 32 x 32) and ``labels`` a list of
    ints. Only the md5 table of torchvision's CIFAR10 is adapted to these files.
    """
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    written = {}
    for name, n in _CIFAR_BATCHES.items():
        batch = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(), "filenames": [f"{name}_{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = batch
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                            "horse", "ship", "truck"], "num_cases_per_batch": 10000, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", _md5(folder / f"data_batch_{i}")]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    return tmp_path, written


def _expected_image(row: np.ndarray) -> torch.Tensor:
    """C x H x W float image of one 3072-byte CIFAR row, decoded by hand."""
    image = torch.empty(3, 32, 32)
    for c in range(3):
        for h in range(32):
            image[c, h] = torch.tensor(row[c * 1024 + h * 32: c * 1024 + h * 32 + 32] / 255.0)
    return image


def test_cifar10_round_trip(tiny_cifar: tuple[Path, dict]) -> None:
    root, written = tiny_cifar
    prepare_dataset("cifar10", root, seed=0, download=False)
    assert json.loads((root / "READY").read_text())["num_items"] == {"train": 10, "test": 5}
    assert dataset_info("cifar10") == DatasetInfo(num_classes=10, input_shape=(3, 32, 32))

    train = load_split("cifar10", root, "train", download=False)
    train_rows = np.concatenate([written[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"]["labels"] for i in range(1, 6)), [])
    assert len(train) == 10
    for i in (0, 3, 9):
        x, y = train[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert y == train_labels[i]
        torch.testing.assert_close(x, _expected_image(train_rows[i]))

    test = load_split("cifar10", root, "test", test_every=2)
    assert len(test) == 3
    for k, i in enumerate((0, 2, 4)):
        x, y = test[k]
        assert y == written["test_batch"]["labels"][i]
        torch.testing.assert_close(x, _expected_image(written["test_batch"]["data"][i]))


def test_cifar10_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("cifar10", tmp_path, seed=0, download=False)
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data.cifar10.download" in message and "cifar-10-python.tar.gz" in message
    assert not (tmp_path / "READY").exists()


@pytest.mark.parametrize("failure", [urllib.error.URLError("no network"), OSError("Network is unreachable")])
def test_cifar10_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: OSError) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("cifar10", tmp_path, seed=0)
    message = str(error.value)
    assert str(failure) in message and "downloading it failed" in message
    assert f"no folder {tmp_path / 'cifar-10-batches-py'}" in message and CIFAR10.url in message
    assert error.value.__cause__ is None and not (tmp_path / "READY").exists()


def test_cifar10_partial_folder(tiny_cifar: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tiny_cifar
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"truncated")
    before = sorted(root.rglob("*"))
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("cifar10", root, seed=0, download=False)
    message = str(error.value)
    assert "missing data_batch_3" in message and "corrupted (md5 mismatch) test_batch" in message
    assert "data.cifar10.download: false" in message and f"tar -xzf cifar-10-python.tar.gz -C {root}" in message
    assert sorted(root.rglob("*")) == before  # refused before anything is written

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="missing data_batch_3.*downloading it failed: <urlopen error no net"):
        prepare_dataset("cifar10", root, seed=0, download=True)


# ------------------------------------------------------------------- imagenet

_WNIDS = ["n03000000", "n01000000", "n02000000"]  # sorted order: n01, n02, n03


def _color(wnid: str, i: int) -> tuple[int, int, int]:
    return (10 * int(wnid[2]), 20 * i, 200)


def _image_tree(folder: Path, per_class: int) -> list[tuple[str, int]]:
    """PNG files ``folder/wnid/img_i.png`` of constant color; returns (path, class) sorted."""
    for wnid in _WNIDS:
        (folder / wnid).mkdir(parents=True)
        for i in range(per_class):
            image = Image.new("RGB", (12, 10), _color(wnid, i))
            (image.convert("L") if i == 1 else image).save(folder / wnid / f"img_{i}.png")
    return [(str(folder / w / f"img_{i}.png"), c) for c, w in enumerate(sorted(_WNIDS)) for i in range(per_class)]


def test_imagenet_subsets(tmp_path: Path) -> None:
    val = _image_tree(tmp_path / "val", per_class=4)
    train = _image_tree(tmp_path / "train", per_class=3)
    root = tmp_path / "data"
    options = {"source": str(tmp_path / "val"), "every": 5, "train_source": str(tmp_path / "train"),
               "train_every": 2, "resize": 8, "crop": 6, "num_classes": 3}
    prepare_dataset("imagenet", root, seed=0, **options)
    assert (root / "classes.txt").read_text().split() == sorted(_WNIDS)
    assert json.loads((root / "READY").read_text())["num_items"] == {"test": 3, "train": 5}
    assert dataset_info("imagenet", **options) == DatasetInfo(num_classes=3, input_shape=(3, 6, 6))
    assert dataset_info("imagenet") == DatasetInfo(num_classes=1000, input_shape=(3, 256, 256))

    for split, expected in (("test", val[::5]), ("train", train[::2])):
        dataset = load_split("imagenet", root, split, **options)
        assert dataset.samples == expected
        for k, (path, label) in enumerate(expected):
            x, y = dataset[k]
            assert y == label and x.dtype == torch.float32 and x.shape == (3, 6, 6)
            pixel = Image.open(path).convert("RGB").getpixel((0, 0))
            torch.testing.assert_close(x, torch.tensor(pixel).div(255).view(3, 1, 1).expand(3, 6, 6))


def test_imagenet_grayscale_becomes_rgb(tmp_path: Path) -> None:
    _image_tree(tmp_path / "val", per_class=2)
    options = {"source": str(tmp_path / "val"), "every": 1, "num_classes": 3, "resize": 10, "crop": 10}
    prepare_dataset("imagenet", tmp_path / "data", seed=0, **options)
    x, y = load_split("imagenet", tmp_path / "data", "test", **options)[1]  # img_1 of class 0 is "L"
    assert y == 0 and x.shape == (3, 10, 10)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    with pytest.raises(ValueError, match="train_source"):
        load_split("imagenet", tmp_path / "data", "train", **options)


def test_imagenet_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("imagenet", tmp_path / "data", seed=0, source=str(missing))
    assert str(missing) in str(error.value) and "data.imagenet.source" in str(error.value)
    with pytest.raises(ValueError, match="data.imagenet.source"):
        prepare_dataset("imagenet", tmp_path / "data", seed=0)
    _image_tree(tmp_path / "val", per_class=1)
    with pytest.raises(ValueError, match="3 class folders but num_classes is 1000"):
        prepare_dataset("imagenet", tmp_path / "data", seed=0, source=str(tmp_path / "val"))
    with pytest.raises(ValueError, match="every"):
        dataset_info("imagenet", every=0)


# The devkit numbers classes by ILSVRC2012_ID, not in wnid order; class k is the k-th wnid in sorted order.
_SYNSETS = [(1, "n03000000", 0), (2, "n01000000", 0), (3, "n02000000", 0), (4, "n00000001", 3)]  # id, wnid, children
_VAL_IDS = [1, 2, 3, 3, 1, 2, 2, 1, 3]  # ILSVRC2012_ID of ILSVRC2012_val_00000001 .. _00000009


def _devkit(folder: Path) -> Path:
    """A tiny ILSVRC2012_devkit_t12 folder: data/meta.mat (a synsets struct array, as scipy.io.savemat
    writes MATLAB structs) and data/ILSVRC2012_validation_ground_truth.txt (one ILSVRC2012_ID per line)."""
    from scipy.io import savemat

    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.array([(i, wnid, f"class {wnid}", "a gloss", children, np.arange(children, dtype=np.uint16), 0, 10)
                        for i, wnid, children in _SYNSETS], dtype=[(f, object) for f in fields])
    (folder / "data").mkdir(parents=True)
    savemat(folder / "data" / "meta.mat", {"synsets": synsets.reshape(-1, 1)})
    (folder / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in _VAL_IDS))
    return folder


def _flat_val(folder: Path) -> None:
    """The official flat layout: ILSVRC2012_val_0000000k.JPEG, colored by class (its ILSVRC2012_ID)."""
    folder.mkdir(parents=True)
    for k, i in enumerate(_VAL_IDS, start=1):
        Image.new("RGB", (12, 10), (80 * i, 10 * k, 0)).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG")
    (folder / "LICENSE.txt").write_text("not an image")


@pytest.mark.parametrize("as_archive", [False, True])
def test_imagenet_official_flat_validation_folder(tmp_path: Path, as_archive: bool) -> None:
    _flat_val(tmp_path / "val")
    devkit = _devkit(tmp_path / "ILSVRC2012_devkit_t12")
    if as_archive:
        with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
            tar.add(devkit, arcname="ILSVRC2012_devkit_t12")
        shutil.rmtree(devkit)
        devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    options = {"source": str(tmp_path / "val"), "devkit": str(devkit), "every": 2, "num_classes": 3,
               "resize": 4, "crop": 4}
    prepare_dataset("imagenet", tmp_path / "data", seed=0, **options)
    assert (tmp_path / "data" / "classes.txt").read_text().split() == ["n01000000", "n02000000", "n03000000"]
    wnid_of_id = {i: wnid for i, wnid, _ in _SYNSETS}
    label_of_id = {i: sorted(w for _, w, c in _SYNSETS if c == 0).index(wnid_of_id[i]) for i in (1, 2, 3)}
    dataset = load_split("imagenet", tmp_path / "data", "test", **options)
    every_image = sorted((label_of_id[i], f"ILSVRC2012_val_{k:08d}.JPEG") for k, i in enumerate(_VAL_IDS, start=1))
    assert [(label, Path(path).name) for path, label in dataset.samples] == every_image[::2]
    # the same images in class folders (as torchvision's parse_val_archive sorts them) give the same test set
    for wnid in ("n01000000", "n02000000", "n03000000"):
        (tmp_path / "sorted" / wnid).mkdir(parents=True)
    for k, i in enumerate(_VAL_IDS, start=1):
        name = f"ILSVRC2012_val_{k:08d}.JPEG"
        shutil.copy(tmp_path / "val" / name, tmp_path / "sorted" / wnid_of_id[i] / name)
    sorted_options = {**options, "source": str(tmp_path / "sorted"), "devkit": None}
    prepare_dataset("imagenet", tmp_path / "data_sorted", seed=0, **sorted_options)
    folders = load_split("imagenet", tmp_path / "data_sorted", "test", **sorted_options)
    assert [(Path(p).name, y) for p, y in folders.samples] == [(Path(p).name, y) for p, y in dataset.samples]
    x, y = dataset[0]
    assert x.shape == (3, 4, 4) and y == 0


def test_imagenet_flat_folder_without_devkit(tmp_path: Path) -> None:
    _flat_val(tmp_path / "val")
    with pytest.raises(FileNotFoundError) as error:
        prepare_dataset("imagenet", tmp_path / "data", seed=0, source=str(tmp_path / "val"))
    message = str(error.value)
    assert f"{tmp_path / 'val'} (config key data.imagenet.source) has no class folders" in message
    assert "data.imagenet.devkit" in message and "ILSVRC2012_devkit_t12.tar.gz" in message
    assert not (tmp_path / "data").exists()
    with pytest.raises(FileNotFoundError, match="has no data/meta.mat"):
        prepare_dataset("imagenet", tmp_path / "data", seed=0, source=str(tmp_path / "val"), devkit=str(tmp_path))
    with pytest.raises(ValueError, match="the devkit .* has 3 classes but num_classes is 1000"):
        prepare_dataset("imagenet", tmp_path / "data", seed=0, source=str(tmp_path / "val"),
                        devkit=str(_devkit(tmp_path / "devkit")))
