"""The config check of ``timm/<name>`` archs reads the names of the installed timm from the user cache once
timm has been asked (dualrs.timm_names), and still asks timm about every name the cache lacks."""
import sys
from importlib.metadata import version

import pytest

from dualrs import timm_names
from dualrs.config_checks import model_problems

CACHE_NAME = f"timm-{version('timm')}-models.txt"


def problems(arch: str) -> list[str]:
    return model_problems("x", {"classifier": {"arch": arch}, "estimator": {"arch": "digits_cnn"}})


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache folder (platformdirs reads XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "dualrs"


def without_timm(monkeypatch) -> None:
    """From here on, ``import timm`` fails: a check that asks timm raises."""
    monkeypatch.setitem(sys.modules, "timm", None)


@pytest.mark.slow  # imports timm (5 s)
def test_a_known_name_is_checked_without_timm_once_timm_has_listed_its_names(cache, monkeypatch):
    assert problems("timm/resnet18") == []
    assert sorted(path.name for path in cache.iterdir()) == [CACHE_NAME]
    without_timm(monkeypatch)
    assert problems("timm/resnet18") == []
    assert problems("timm/resnet18.a1_in1k") == []  # a pretrained tag


@pytest.mark.slow  # imports timm (5 s)
def test_a_name_the_cache_lacks_is_asked_of_timm(cache, monkeypatch):
    [problem] = problems("timm/resnet_eighteen")
    assert problem.startswith(f"config: experiments.x.classifier.arch: timm has no model 'resnet_eighteen' "
                              f"(timm {version('timm')}); similar: ")
    without_timm(monkeypatch)
    for arch in ("timm/resnet_eighteen", "timm/hf-hub:timm/resnet18.a1_in1k"):  # unknown; a source prefix
        with pytest.raises(ImportError):
            problems(arch)


@pytest.mark.slow  # imports timm (5 s)
def test_an_unwritable_or_corrupt_cache_changes_no_answer(tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert problems("timm/resnet18") == [] and blocked.is_file()
    corrupt = tmp_path / "corrupt" / "dualrs"
    corrupt.mkdir(parents=True)
    (corrupt / CACHE_NAME).write_bytes(b"\xff\xfe resnet18")
    monkeypatch.setenv("XDG_CACHE_HOME", str(corrupt.parent))
    with monkeypatch.context() as blocking:
        without_timm(blocking)
        with pytest.raises(ImportError):
            problems("timm/resnet18")
    assert problems("timm/resnet18") == []
    assert sorted(path.name for path in corrupt.iterdir()) == [CACHE_NAME]  # rewritten, no temporary file left
    assert timm_names.remembered("resnet18")


def test_names_are_remembered_per_timm_version(cache, monkeypatch):
    assert not timm_names.remembered("resnet18")
    timm_names.remember(["resnet18", "vit_base_patch16_224"])
    assert timm_names.remembered("resnet18") and not timm_names.remembered("resnet1")
    monkeypatch.setattr(timm_names, "version", lambda package: "0.0.1")
    assert not timm_names.remembered("resnet18")
