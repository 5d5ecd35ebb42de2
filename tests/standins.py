"""Tiny stand-ins, in the real on-disk formats, for the data and weights of the paper's experiments.

Everything is written at the paths ``config/config.yaml`` gives (and ``tests/configs/paper_standins.yaml``
points the ImageNet folders at), relative to a work directory:

- ``data/cifar10/cifar-10-batches-py``: torchvision's pickled batches (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``) with a few random 32x32 images per class;
- ``standins/imagenet/{val,train}``: ImageFolder trees of JPEGs, one folder per wnid;
- the two denoisers, converted by :func:`dualrs.convert.convert_openai_checkpoint` from the tiny
  improved-/guided-diffusion models of ``tests/fixtures/diffusion`` (weights rebuilt as there);
- the two off-the-shelf classifiers: tiny timm models saved as safetensors at ``classifier.weights``.

Torchvision checks CIFAR-10's files against the md5 sums of the real batches; :func:`write_md5_override`
writes a ``sitecustomize.py`` that swaps in the stand-in's sums, for processes started with that folder
on ``PYTHONPATH``.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "diffusion"
OVERLAY = TESTS / "configs" / "paper_standins.yaml"
CIFAR10_FOLDER = "data/cifar10/cifar-10-batches-py"
WNIDS = ("n01440764", "n01443537", "n01484850")
#: config experiment -> the tiny improved-/guided-diffusion model of tests/fixtures/diffusion
DENOISERS = {"cifar10": "improved_diffusion_cifar10_tiny", "imagenet": "guided_diffusion_uncond_tiny"}


def merged_config(overlay: Path = OVERLAY) -> dict:
    """``config/config.yaml`` with ``overlay`` deep-merged over it, as Snakemake's ``--configfile`` does."""
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return deep_merge(base, yaml.safe_load(overlay.read_text()))


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``; nested mappings merge, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def write_cifar10(work: Path, per_class: int = 2, seed: int = 0) -> dict[str, str]:
    """torchvision's ``cifar-10-batches-py`` with ``per_class`` images per class in each of the six batches;
    returns each file's md5."""
    folder = work / CIFAR10_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = [c for c in range(10) for _ in range(per_class)]
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {"batch_label": name, "labels": labels, "filenames": [f"{name}_{i}.png" for i in range(len(labels))],
                 "data": rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            "num_cases_per_batch": len(labels), "num_vis": 3 * 32 * 32}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


MD5_OVERRIDE = '''"""Stand-in CIFAR-10: torchvision checks the stand-in's md5 sums instead of the real batches'."""
import importlib.abc
import importlib.util
import sys

MD5 = {md5!r}


def _patch(cifar):
    cifar.CIFAR10.train_list = [[name, MD5[name]] for name, _ in cifar.CIFAR10.train_list]
    cifar.CIFAR10.test_list = [[name, MD5[name]] for name, _ in cifar.CIFAR10.test_list]
    cifar.CIFAR10.meta = {{**cifar.CIFAR10.meta, "md5": MD5["batches.meta"]}}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torchvision.datasets.cifar":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''


def write_md5_override(folder: Path, md5: dict[str, str]) -> Path:
    """A ``sitecustomize.py`` in ``folder`` that makes torchvision accept the stand-in CIFAR-10 files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(MD5_OVERRIDE.format(md5=md5))
    return folder


def write_image_folder(root: Path, per_class: int, seed: int) -> None:
    """An ImageFolder of random JPEGs, ``per_class`` per wnid, of ImageNet-like (non-square) sizes."""
    rng = np.random.default_rng(seed)
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (int(rng.integers(80, 120)), int(rng.integers(80, 120)))
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / wnid / f"{wnid}_{i}.JPEG", quality=90)


def write_imagenet(work: Path, config: dict, per_class: int = 1, train_per_class: int = 2) -> None:
    """The validation and training ImageFolders at ``data.imagenet.source`` / ``train_source``."""
    data = config["data"]["imagenet"]
    write_image_folder(work / data["source"], per_class, seed=1)
    write_image_folder(work / data["train_source"], train_per_class, seed=2)


def rebuild_weights(name: str) -> dict:
    """The tiny original model's state dict, rebuilt as ``tests/fixtures/diffusion`` describes."""
    sys.path.insert(0, str(TESTS))
    from test_convert import state_dict

    return state_dict(name)


def write_denoisers(work: Path, config: dict) -> None:
    """Each experiment's ``denoiser.path``: the tiny openai model converted by the project's converter."""
    from dualrs.convert import convert_openai_checkpoint

    for experiment, name in DENOISERS.items():
        flags = json.loads((FIXTURES / f"{name}.flags.json").read_text())
        out = work / config["experiments"][experiment]["denoiser"]["path"]
        convert_openai_checkpoint(rebuild_weights(name), flags, out)


def num_classes(config: dict, experiment: str) -> int:
    data = config["experiments"][experiment]["data"]
    return 10 if data == "cifar10" else config["data"]["imagenet"]["num_classes"]


def write_classifiers(work: Path, config: dict, seed: int = 0) -> None:
    """Each experiment's ``classifier.weights``: its timm ``arch`` with the (tiny) timm options of the
    config (every option but ``input_size``), seeded, as safetensors."""
    import timm
    import torch
    from safetensors.torch import save_file

    for experiment in DENOISERS:
        classifier = config["experiments"][experiment]["classifier"]
        torch.manual_seed(seed)
        options = {k: v for k, v in classifier.get("options", {}).items() if k != "input_size"}
        model = timm.create_model(classifier["arch"].removeprefix("timm/"), num_classes=num_classes(config, experiment),
                                  **options)
        out = work / classifier["weights"]
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))


def write_standins(work: Path, overlay: Path = OVERLAY) -> Path:
    """Every stand-in of both paper experiments under ``work``; returns the folder to put on ``PYTHONPATH``."""
    config = merged_config(overlay)
    md5 = write_cifar10(work)
    write_imagenet(work, config)
    write_denoisers(work, config)
    write_classifiers(work, config)
    return write_md5_override(work / "standins" / "site", md5)
