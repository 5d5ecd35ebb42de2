"""Dataset registry: ``digits``, ``cifar10``, ``imagenet`` and those of installed plugins.

Every dataset is described by a :class:`DatasetSpec`: the built-in ones in :data:`DATASETS`, others
declared by installed packages in the entry point group ``dualrs.datasets`` (:mod:`dualrs.plugins`). The
pipeline calls :func:`prepare_dataset` once per dataset (writing a stable
on-disk form under ``data/{name}`` that ends with a ``READY`` manifest) and
later :func:`load_split`, which yields ``(x, y)`` items with ``x`` a float32
``C x H x W`` tensor in ``[0, 1]`` and ``y`` an ``int`` label.

Options are passed as keyword arguments (the `data` block of the config);
unknown names and values are rejected with a :class:`ValueError`.
"""

from __future__ import annotations

# torchvision and PIL are imported where cifar10/imagenet need them: digits runs start faster.

import csv
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from dualrs.plugins import DATASETS_GROUP, load_plugin, plugin_names
from dualrs.tables import atomic_file

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

SPLITS = ("train", "test")
READY = "READY"

# Marks an option that changes what prepare_dataset writes; load_split checks
# that such options match the ones recorded in the READY manifest.
_ON_DISK = {"on_disk": True}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    num_classes: int
    input_shape: tuple[int, int, int]  # C, H, W as the model receives it


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: an options dataclass and the functions that use it."""

    options: type
    info: Callable[[Any], DatasetInfo]
    prepare: Callable[[Path, int, Any], None]
    load: Callable[[Path, str, Any], Dataset]
    splits: Callable[[Any], tuple[str, ...]] = lambda opts: SPLITS
    check_sources: Callable[[Path, Any], None] = lambda root, opts: None  # raises if what it reads is missing


def _check_positive_ints(opts: Any, names: Sequence[str]) -> None:
    """Raise ValueError unless each named option of ``opts`` is an int >= 1."""
    for name in names:
        value = getattr(opts, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"option {name!r} must be a positive int, got {value!r}")


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through :func:`dualrs.tables.atomic_file` with a binary writer."""
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        write(f)


def _atomic_write_text(path: Path, text: str) -> None:
    """Atomically write UTF-8 ``text`` to ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class LabeledTensorDataset(TensorDataset):
    """A ``TensorDataset`` of ``(x, y)`` whose items carry ``y`` as a Python int."""

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.tensors
        return x[index], int(y[index])


# --------------------------------------------------------------------- digits


@dataclass(frozen=True)
class DigitsOptions:
    """Options of ``digits`` (scikit-learn's 8x8 handwritten digits), the last two applied when loaded
    (the same prepared files serve every value): ``resolution`` > 8 upsamples the images bilinearly;
    ``contrast`` (c_0, …, c_{m-1}) multiplies the image of index k in scikit-learn's digits by c_{k mod m},
    in both splits, so that a mix of contrasts gives inputs whose best σ differs (a contrast c scales the
    signal, hence the σ that suits it, by c)."""

    test_fraction: float = field(default=0.3, metadata=_ON_DISK)
    resolution: int = 8
    contrast: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"option 'test_fraction' must be in (0, 1), got {self.test_fraction!r}")
        _check_positive_ints(self, ["resolution"])
        if self.resolution < 8:
            raise ValueError(f"option 'resolution' must be at least 8 (the digits' own), got {self.resolution!r}")
        factors = self.contrast
        if (not isinstance(factors, (list, tuple)) or not factors
                or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 < c <= 1.0
                           for c in factors)):
            raise ValueError(f"option 'contrast' must be a non-empty list of factors in (0, 1], got {factors!r}")
        object.__setattr__(self, "contrast", tuple(float(c) for c in factors))


def _digits_info(opts: DigitsOptions) -> DatasetInfo:
    return DatasetInfo(num_classes=10, input_shape=(1, opts.resolution, opts.resolution))


def _prepare_digits(root: Path, seed: int, opts: DigitsOptions) -> None:
    """Write a seeded, stratified split to ``train.npz`` and ``test.npz``."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn costs every other job 0.6 s
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=opts.test_fraction, stratify=y, random_state=seed
    )
    for split, idx in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        _atomic_write(root / f"{split}.npz", lambda f, i=idx: np.savez(f, x=x[i], y=y[i], index=i))


def _load_digits(root: Path, split: str, opts: DigitsOptions) -> Dataset:
    with np.load(root / f"{split}.npz") as arrays:
        x, y, index = (torch.from_numpy(arrays[key]) for key in ("x", "y", "index"))
    if opts.resolution != x.shape[-1]:
        size = (opts.resolution, opts.resolution)
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
    if opts.contrast != (1.0,):
        factors = torch.tensor(opts.contrast, dtype=x.dtype)[index % len(opts.contrast)]
        x = x * factors[:, None, None, None]
    return LabeledTensorDataset(x, y)


# -------------------------------------------------------------------- cifar10


@dataclass(frozen=True)
class Cifar10Options:
    """Options of ``cifar10``; ``test_every=k`` keeps every k-th test image."""

    download: bool = True
    test_every: int = 1

    def __post_init__(self) -> None:
        _check_positive_ints(self, ["test_every"])


def _cifar10_info(opts: Cifar10Options) -> DatasetInfo:
    return DatasetInfo(num_classes=10, input_shape=(3, 32, 32))


def _cifar10_problems(root: Path) -> list[str]:
    """What is missing or corrupted (md5) in ``root/cifar-10-batches-py``; empty when it is complete."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    folder = root / CIFAR10.base_folder
    if not folder.is_dir():
        return [f"no folder {folder}"]
    expected = [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    missing = [name for name, _ in expected if not (folder / name).is_file()]
    corrupted = [name for name, md5 in expected if name not in missing and not check_integrity(folder / name, md5)]
    return ([f"missing {', '.join(missing)}"] if missing else []) + (
        [f"corrupted (md5 mismatch) {', '.join(corrupted)}"] if corrupted else [])


def _cifar10_error(root: Path, problems: list[str], how: str) -> FileNotFoundError:
    """The one error users see when CIFAR-10 is neither complete at ``root`` nor downloadable."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    return FileNotFoundError(
        f"CIFAR-10 is not complete at {folder} ({'; '.join(problems)}) and {how}. Place the python version "
        f"there: download {CIFAR10.url} (see https://www.cs.toronto.edu/~kriz/cifar.html) and run "
        f"`tar -xzf cifar-10-python.tar.gz -C {root}`, which creates {folder} with data_batch_1 .. data_batch_5, "
        "test_batch and batches.meta; or set data.cifar10.download: true on a machine with network."
    )


def _check_cifar10(root: Path, opts: Cifar10Options) -> None:
    """Without download, refuse a missing or partial batches folder before anything is written."""
    problems = _cifar10_problems(root)
    if problems and not opts.download:
        raise _cifar10_error(root, problems, "downloading is disabled (data.cifar10.download: false)")


def _prepare_cifar10(root: Path, seed: int, opts: Cifar10Options) -> None:
    """Use the extracted, md5-checked batches at ``root``, downloading them (torchvision) if incomplete."""
    from torchvision.datasets import CIFAR10

    problems = _cifar10_problems(root)
    if not problems:
        return
    try:
        CIFAR10(root, train=False, download=True)
    except (OSError, RuntimeError) as error:
        raise _cifar10_error(root, problems, f"downloading it failed: {error}") from None
    problems = _cifar10_problems(root)
    if problems:
        raise _cifar10_error(root, problems, "the downloaded archive did not complete it")


def _load_cifar10(root: Path, split: str, opts: Cifar10Options) -> Dataset:
    from torchvision import transforms
    from torchvision.datasets import CIFAR10

    dataset = CIFAR10(root, train=split == "train", transform=transforms.ToTensor())
    if split == "test" and opts.test_every > 1:
        return Subset(dataset, range(0, len(dataset), opts.test_every))
    return dataset


# ------------------------------------------------------------------- imagenet


@dataclass(frozen=True)
class ImageNetOptions:
    """Options of ``imagenet``, subsampled every k-th image: the validation images ``source``, either in one
    folder per class (wnid) or flat as the official ``ILSVRC2012_img_val.tar`` extracts, labelled then by
    ``devkit`` (``ILSVRC2012_devkit_t12.tar.gz`` or the folder it extracts to); training images
    ``train_source`` in class folders."""

    source: str | None = field(default=None, metadata=_ON_DISK)
    every: int = field(default=100, metadata=_ON_DISK)
    train_source: str | None = field(default=None, metadata=_ON_DISK)
    train_every: int = field(default=100, metadata=_ON_DISK)
    devkit: str | None = field(default=None, metadata=_ON_DISK)
    resize: int = 256
    crop: int = 256
    num_classes: int = 1000

    def __post_init__(self) -> None:
        _check_positive_ints(self, ["every", "train_every", "resize", "crop", "num_classes"])
        for name in ("source", "train_source", "devkit"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(Path(value).expanduser().resolve()))


def _imagenet_info(opts: ImageNetOptions) -> DatasetInfo:
    return DatasetInfo(num_classes=opts.num_classes, input_shape=(3, opts.crop, opts.crop))


def _imagenet_splits(opts: ImageNetOptions) -> tuple[str, ...]:
    return SPLITS if opts.train_source is not None else ("test",)


def _check_folder(source: str | None, key: str) -> None:
    """A missing ImageNet folder is one error naming the path and config key."""
    if source is None:
        raise ValueError(f"imagenet needs option {key!r} (config key data.imagenet.{key})")
    if not Path(source).is_dir():
        raise FileNotFoundError(
            f"ImageNet folder {source} does not exist (config key data.imagenet.{key}); "
            "it must hold one subfolder of images per class (wnid)"
        )


def _has_class_folders(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return any(entry.is_dir() for entry in entries)


_DEVKIT_URL = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"


def _check_imagenet_sources(root: Path, opts: ImageNetOptions) -> None:
    _check_folder(opts.source, "source")
    if opts.devkit is not None and not Path(opts.devkit).exists():
        raise FileNotFoundError(f"ImageNet devkit {opts.devkit} does not exist (config key data.imagenet.devkit)")
    if opts.devkit is None and not _has_class_folders(opts.source):
        raise FileNotFoundError(
            f"ImageNet folder {opts.source} (config key data.imagenet.source) has no class folders: it holds the "
            "images directly, as the official ILSVRC2012_img_val.tar extracts (ILSVRC2012_val_00000001.JPEG ...). "
            "Set data.imagenet.devkit to ILSVRC2012_devkit_t12.tar.gz (or the folder it extracts to; from "
            f"{_DEVKIT_URL}), whose data/ILSVRC2012_validation_ground_truth.txt labels them, or sort them into "
            "one folder per wnid"
        )
    if opts.train_source is not None:
        _check_folder(opts.train_source, "train_source")
        if not _has_class_folders(opts.train_source):
            raise FileNotFoundError(f"ImageNet folder {opts.train_source} (config key data.imagenet.train_source) "
                                    "has no class folders; it must hold one subfolder of images per class (wnid)")


def _devkit_file(devkit: Path, name: str) -> bytes:
    """``name`` (e.g. ``data/meta.mat``) of the devkit archive or of the folder it extracts to."""
    if devkit.is_dir() and (devkit / name).is_file():
        return (devkit / name).read_bytes()
    if devkit.is_file():
        with tarfile.open(devkit) as tar:
            for member in tar.getmembers():
                if member.isfile() and (member.name == name or member.name.endswith(f"/{name}")):
                    return tar.extractfile(member).read()
    raise FileNotFoundError(f"ImageNet devkit {devkit} (config key data.imagenet.devkit) has no {name}; it must be "
                            "ILSVRC2012_devkit_t12.tar.gz or the folder ILSVRC2012_devkit_t12 it extracts to")


def _devkit_labels(devkit: Path) -> tuple[list[str], list[str]]:
    """The devkit's classes (leaf synsets of data/meta.mat) as sorted wnids, the order of class folders and of
    classifiers' outputs, and each validation image's wnid (data/ILSVRC2012_validation_ground_truth.txt, whose
    line i holds the ILSVRC2012_ID of ILSVRC2012_val_i); parsed as torchvision's ``parse_devkit_archive``."""
    from scipy.io import loadmat

    synsets = loadmat(io.BytesIO(_devkit_file(devkit, "data/meta.mat")), squeeze_me=True)["synsets"]
    leaves = {int(synset[0]): str(synset[1]) for synset in synsets if int(synset[4]) == 0}
    truth = _devkit_file(devkit, "data/ILSVRC2012_validation_ground_truth.txt").decode().split()
    return sorted(leaves.values()), [leaves[int(i)] for i in truth]


_VAL_IMAGE = re.compile(r"ILSVRC2012_val_(\d+)\.JPEG", re.IGNORECASE)


def _flat_val_samples(source: str, devkit: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes and ``(path, label)`` of the flat official validation folder, in the order of class folders
    (by class, then file name) so that ``every`` picks the same images from either layout."""
    wnids, val_wnids = _devkit_labels(Path(devkit))
    label = {wnid: k for k, wnid in enumerate(wnids)}
    samples = []
    for path in Path(source).iterdir():
        match = _VAL_IMAGE.fullmatch(path.name)
        if match is None:
            continue
        number = int(match[1])
        if not 1 <= number <= len(val_wnids):
            raise ValueError(f"{path} has no label in the devkit {devkit} (it labels images 1 .. {len(val_wnids)})")
        samples.append((str(path), label[val_wnids[number - 1]]))
    if not samples:
        raise FileNotFoundError(f"ImageNet folder {source} holds no ILSVRC2012_val_*.JPEG images")
    return wnids, sorted(samples, key=lambda sample: (sample[1], sample[0]))


def _image_folder(source: str | None, key: str) -> ImageFolder:
    """Scan an ImageFolder tree."""
    from torchvision.datasets import ImageFolder

    _check_folder(source, key)
    return ImageFolder(source)


def _imagenet_test(opts: ImageNetOptions) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (wnids) and samples of ``source``: its class folders, else the flat layout labelled by the devkit."""
    if _has_class_folders(opts.source):
        folder = _image_folder(opts.source, "source")
        classes, samples = folder.classes, folder.samples
        where = f"{opts.source} has {len(classes)} class folders"
    else:
        classes, samples = _flat_val_samples(opts.source, opts.devkit)
        where = f"the devkit {opts.devkit} has {len(classes)} classes"
    if len(classes) != opts.num_classes:
        raise ValueError(f"{where} but num_classes is {opts.num_classes} (config key data.imagenet.num_classes)")
    return classes, samples


def _write_tsv(path: Path, samples: Sequence[tuple[str, int]]) -> None:
    """Atomically write ``path\\tlabel`` rows with a header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["path", "label"])
    writer.writerows(samples)
    _atomic_write_text(path, buffer.getvalue())


def _image_problem(path: str) -> str | None:
    """Why PIL cannot read ``path`` as the loader does (``verify`` checks the file's structure, ``load``
    decodes every pixel, which finds truncated data), or None."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, ... on corrupt files
        return f"{path}: {type(error).__name__}: {error}"
    return None


def verify_images(samples: Sequence[tuple[str, int]], keys: str) -> None:
    """Raise one ValueError naming every image of ``samples`` that does not decode, before anything is
    written: a corrupt image would otherwise stop a certification job hours into its shard."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        problems = [p for p in pool.map(_image_problem, [path for path, _ in samples]) if p]
    if problems:
        shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise ValueError(f"{len(problems)} of the {len(samples)} images selected from {keys} do not decode; "
                         f"replace or remove them:\n  {shown}")


def _prepare_imagenet(root: Path, seed: int, opts: ImageNetOptions) -> None:
    """Write ``classes.txt``, ``test.tsv`` and (with ``train_source``) ``train.tsv`` once every image they
    list decodes."""
    classes, samples = _imagenet_test(opts)
    test, train = samples[:: opts.every], None
    if opts.train_source is not None:
        folder = _image_folder(opts.train_source, "train_source")
        if folder.classes != classes:
            raise ValueError(f"class folders of {opts.train_source} differ from the classes of {opts.source}")
        train = folder.samples[:: opts.train_every]
    keys = f"{opts.source} (config key data.imagenet.source)" + (
        "" if train is None else f" and {opts.train_source} (data.imagenet.train_source)")
    verify_images([*test, *(train or [])], keys)
    _atomic_write_text(root / "classes.txt", "".join(f"{c}\n" for c in classes))
    _write_tsv(root / "test.tsv", test)
    if train is None:
        (root / "train.tsv").unlink(missing_ok=True)
    else:
        _write_tsv(root / "train.tsv", train)


class ImageListDataset(Dataset):
    """Images read with PIL (as RGB) from a list of ``(path, label)``, then transformed."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        from PIL import Image

        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def _load_imagenet(root: Path, split: str, opts: ImageNetOptions) -> Dataset:
    from torchvision import transforms

    if split not in _imagenet_splits(opts):
        raise ValueError("imagenet has a train split only with option 'train_source'")
    with open(root / f"{split}.tsv", newline="", encoding="utf-8") as f:
        samples = [(row["path"], int(row["label"])) for row in csv.DictReader(f, delimiter="\t")]
    transform = transforms.Compose(
        [transforms.Resize(opts.resize), transforms.CenterCrop(opts.crop), transforms.ToTensor()]
    )
    return ImageListDataset(samples, transform)


# ------------------------------------------------------------------- registry

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(DigitsOptions, _digits_info, _prepare_digits, _load_digits),
    "cifar10": DatasetSpec(Cifar10Options, _cifar10_info, _prepare_cifar10, _load_cifar10,
                           check_sources=_check_cifar10),
    "imagenet": DatasetSpec(
        ImageNetOptions, _imagenet_info, _prepare_imagenet, _load_imagenet, _imagenet_splits,
        _check_imagenet_sources,
    ),
}


def dataset_names() -> list[str]:
    """The built-in datasets and those installed packages declare (entry point group ``dualrs.datasets``)."""
    return sorted({*DATASETS, *plugin_names(DATASETS_GROUP)})


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``: a built-in one, else the installed entry point of that name."""
    if name in DATASETS:
        return DATASETS[name]
    if name not in plugin_names(DATASETS_GROUP):
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(dataset_names())}")
    spec = load_plugin(DATASETS_GROUP, name)
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"entry point {name!r} of group {DATASETS_GROUP!r} is a {type(spec).__name__}, "
                        "not a dualrs.data.DatasetSpec")
    return spec


def _resolve(name: str, options: dict[str, Any]) -> tuple[DatasetSpec, Any]:
    """Look up ``name`` and build its options, rejecting unknown ones."""
    spec = dataset_spec(name)
    valid = [f.name for f in fields(spec.options)]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; valid: {', '.join(valid)}"
        )
    return spec, spec.options(**options)


def dataset_info(name: str, **options: Any) -> DatasetInfo:
    """Number of classes and model input shape of dataset ``name``."""
    spec, opts = _resolve(name, options)
    return spec.info(opts)


def prepare_dataset(name: str, root: Path, *, seed: int, **options: Any) -> None:
    """Write dataset ``name`` under ``root``, ending with the ``root/READY`` manifest.

    Deterministic given ``seed`` and the options (only ``digits`` uses the seed),
    so running it again is harmless; every file is written atomically and READY
    is removed first, so an interrupted run never looks finished. The manifest
    records the options that change the files written (``on_disk``) and nothing
    else, so an option applied when loading never changes the prepared data.
    """
    spec, opts = _resolve(name, options)
    root = Path(root)
    spec.check_sources(root, opts)
    root.mkdir(parents=True, exist_ok=True)
    (root / READY).unlink(missing_ok=True)
    spec.prepare(root, seed, opts)
    manifest = {
        "name": name,
        "seed": seed,
        "options": {f.name: getattr(opts, f.name) for f in fields(opts) if f.metadata.get("on_disk")},
        "num_items": {split: len(spec.load(root, split, opts)) for split in spec.splits(opts)},
    }
    _atomic_write_text(root / READY, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _check_manifest(name: str, root: Path, opts: Any) -> None:
    """Ensure ``root`` was prepared for ``name`` with the same on-disk options."""
    ready = root / READY
    if not ready.is_file():
        raise FileNotFoundError(f"{ready} is missing: prepare the dataset first (`dualrs prepare-data --dataset {name} "
                                f"--root {root}`, or prepare_dataset({name!r}, {str(root)!r}) in Python)")
    manifest = json.loads(ready.read_text(encoding="utf-8"))
    if manifest["name"] != name:
        raise ValueError(f"{root} holds dataset {manifest['name']!r}, not {name!r}")
    for f in fields(opts):
        prepared, asked = manifest["options"].get(f.name), getattr(opts, f.name)
        if f.metadata.get("on_disk") and prepared != asked:
            raise ValueError(
                f"{root} was prepared with {f.name}={prepared!r} but {asked!r} was asked for; "
                "prepare it again with the new options (`dualrs prepare-data`, or prepare_dataset in Python)"
            )


def load_split(name: str, root: Path, split: str, **options: Any) -> Dataset:
    """The ``train`` or ``test`` split of dataset ``name`` prepared under ``root``."""
    spec, opts = _resolve(name, options)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    root = Path(root)
    _check_manifest(name, root, opts)
    return spec.load(root, split, opts)
