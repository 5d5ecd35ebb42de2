"""Model builders: the registry, and off-the-shelf timm classifiers loaded from local weight files."""
import pytest
import safetensors.torch
import timm
import torch

from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.io import load_checkpoint
from dualrs.models import create_model, list_models


def test_registry_names_known_models_and_rejects_others():
    assert "digits_cnn" in list_models()
    assert create_model("digits_cnn", 3, 1)(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown model architecture 'nope'.*digits_cnn"):
        create_model("nope", 10, 1)


@pytest.fixture
def timm_weights(tmp_path):
    torch.manual_seed(0)
    reference = timm.create_model("test_vit", pretrained=False, num_classes=10).eval()
    path = tmp_path / "test_vit.safetensors"
    safetensors.torch.save_file(reference.state_dict(), path)
    return reference, path


def test_timm_classifier_loads_local_weights_behind_resize_and_normalization(timm_weights):
    reference, path = timm_weights
    model = create_model("timm/test_vit", 10, 3, weights=str(path), input_size=160).eval()
    x = torch.rand(2, 3, 32, 32)  # CIFAR-10 resolution, resized to the backbone's 160
    cfg = reference.pretrained_cfg
    expected = reference((torch.nn.functional.interpolate(x, size=(160, 160), mode="bilinear")
                          - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected)


def test_estimator_initialised_from_classifier_weights_gets_a_fresh_head(timm_weights):
    reference, path = timm_weights
    estimator = create_model("timm/test_vit", 3, 3, weights=str(path))
    backbone = estimator[-1]
    assert backbone.get_classifier().out_features == 3
    torch.testing.assert_close(backbone.patch_embed.proj.weight, reference.patch_embed.proj.weight)


def test_weights_of_another_architecture_are_refused(tmp_path, timm_weights):
    _, path = timm_weights
    with pytest.raises(ValueError, match="does not fit"):
        create_model("timm/test_resnet", 10, 3, weights=str(path))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        create_model("timm/test_vit", 10, 3, weights=str(tmp_path / "missing.safetensors"))


def test_fetch_pretrained_stores_an_equivalent_dualrs_checkpoint(tmp_path, timm_weights):
    reference, path = timm_weights
    prepare_dataset("digits", tmp_path / "data", seed=0)
    out = tmp_path / "clf.safetensors"
    # digits has one channel; build the 1-channel variant of the reference for this check
    torch.manual_seed(0)
    gray = timm.create_model("test_vit", pretrained=False, num_classes=10, in_chans=1)
    safetensors.torch.save_file(gray.state_dict(), path)
    main(["fetch-pretrained", "--dataset", "digits", "--root", str(tmp_path / "data"), "--arch", "timm/test_vit",
          "--model-options", '{"input_size": 32}', "--weights", str(path), "--out", str(out)])
    model, meta = load_checkpoint(out)
    assert meta["arch"] == "timm/test_vit" and meta["model_kwargs"] == {"input_size": 32}
    direct = create_model("timm/test_vit", 10, 1, weights=str(path), input_size=32).eval()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), direct(x))
