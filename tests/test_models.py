"""Model builders: the registry, and off-the-shelf timm classifiers loaded from local weight files."""
import re

import pytest
import safetensors.torch
import timm
import torch

from dualrs.cli import main
from dualrs.data import prepare_dataset
from dualrs.io import load_checkpoint
from dualrs.models import AdaptiveAvgPool2d, create_model, list_models
from dualrs.tasks import DataRef, fetch_pretrained


def test_registry_names_known_models_and_rejects_others():
    assert "digits_cnn" in list_models()
    assert create_model("digits_cnn", 3, 1)(torch.rand(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown model architecture 'nope'.*digits_cnn"):
        create_model("nope", 10, 1)



@pytest.mark.parametrize("arch,options,message", [
    ("digits_cnn", {"bogus": 1}, "architecture 'digits_cnn' takes no option 'bogus'; its options: width"),
    ("digits_cnn", {"weights": "w.pth", "reinit_head": True},
     "architecture 'digits_cnn' takes no option 'reinit_head', 'weights'; its options: width"),
    ("cifar_resnet20", {"depth": 56}, "architecture 'cifar_resnet20' takes no option 'depth'; its options: none"),
    ("digits_mlp", {"width": -1}, "architecture 'digits_mlp' cannot be built with options {'width': -1}: "),
    ("cifar_resnet110", {"depth": 5}, "cannot be built with options {'depth': 5}: cifar_resnet depth must be 6k + 2"),
    ("timm/not_a_model", {}, "unknown model architecture 'timm/not_a_model': timm "),
])
def test_options_a_builder_cannot_take_are_one_error_naming_the_architecture(arch, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(arch, 10, 1, **options)


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
    estimator = create_model("timm/test_vit", 3, 3, weights=str(path), reinit_head=True)
    backbone = estimator[-1]
    assert backbone.get_classifier().out_features == 3
    torch.testing.assert_close(backbone.patch_embed.proj.weight, reference.patch_embed.proj.weight)


def test_a_head_of_another_size_is_refused(timm_weights):
    _, path = timm_weights
    with pytest.raises(ValueError, match=f"{path} has a 10-class classification head but the dataset has 3 classes"):
        create_model("timm/test_vit", 3, 3, weights=str(path))
    headless = path.with_name("headless.safetensors")
    safetensors.torch.save_file(timm.create_model("test_vit", num_classes=0).state_dict(), headless)
    with pytest.raises(ValueError, match="has no classification head but the dataset has 10 classes"):
        create_model("timm/test_vit", 10, 3, weights=str(headless))


def test_input_size_the_backbone_cannot_take_is_refused_when_built(timm_weights):
    _, path = timm_weights
    with pytest.raises(ValueError, match="'input_size' of timm/test_vit must be a multiple of its patch size 16"):
        create_model("timm/test_vit", 10, 3, weights=str(path), input_size=100)
    with pytest.raises(ValueError, match="option 'input_size' of timm/test_vit must be a positive int"):
        create_model("timm/test_vit", 10, 3, input_size="160")
    with pytest.raises(ValueError, match=r"input_size' of timm/beit_base_patch16_224 must be 32 \(its patch embedding"):
        create_model("timm/beit_base_patch16_224", 10, 3, input_size=100, **TINY_BEIT)


TINY_BEIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def test_timm_beit_checkpoint_loads_at_its_own_input_size(tmp_path):
    """The ImageNet classifier's family (timm BEiT, relative position bias), tiny: timm kwargs pass through."""
    torch.manual_seed(0)
    reference = timm.create_model("beit_base_patch16_224", num_classes=7, **TINY_BEIT).eval()
    path = tmp_path / "beit.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    model = create_model("timm/beit_base_patch16_224", 7, 3, weights=str(path), **TINY_BEIT).eval()
    assert model[0].size == 32
    x = torch.rand(2, 3, 24, 24)
    expected = reference((torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear") - 0.5) / 0.5)
    torch.testing.assert_close(model(x), expected)


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


def test_fetch_pretrained_refuses_a_truncated_weight_file_before_building_the_model(tmp_path, monkeypatch):
    path = tmp_path / "test_vit.safetensors"
    safetensors.torch.save_file(timm.create_model("test_vit", num_classes=10).state_dict(), path)
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setattr(timm, "create_model", lambda *args, **kwargs: pytest.fail("the model was built"))
    out = tmp_path / "clf.safetensors"
    with pytest.raises(ValueError, match=f"^weights {re.escape(str(path))} is not a safetensors or PyTorch "
                                         "checkpoint, or is truncated: SafetensorError: "):
        fetch_pretrained(DataRef("digits", tmp_path / "data"), "timm/test_vit", {}, path, out)
    assert not out.exists()


def test_cifar_resnet110_is_cohen_et_als_architecture():
    """3 stages x 18 basic blocks (two 3x3 convs each) + stem + head = 110 weighted layers, 16/32/64 channels."""
    model = create_model("cifar_resnet110", 10, 3)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 110
    assert sorted({c.out_channels for c in convs}) == [16, 32, 64]
    assert 1.6e6 < sum(p.numel() for p in model.parameters()) < 1.8e6  # He et al. 2016, Table 6: 1.7M
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="6k \\+ 2"):
        create_model("cifar_resnet110", 10, 3, depth=100)


HF_MEAN, HF_STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _hf_vit_folder(folder, num_channels=3, num_labels=10, weights_format="safetensors"):
    """A tiny random ViTForImageClassification saved as a Hub model folder (with its image processor's config)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                       patch_size=8, num_labels=num_labels, num_channels=num_channels)
    reference = ViTForImageClassification(config).eval()
    reference.save_pretrained(folder)
    if weights_format == "bin":  # the layout of checkpoints saved by transformers 4.x, e.g. Carlini et al.'s ViT
        (folder / "model.safetensors").unlink()
        torch.save(reference.state_dict(), folder / "pytorch_model.bin")
    ViTImageProcessor(image_mean=HF_MEAN[:num_channels], image_std=HF_STD[:num_channels],
                      size={"height": 32, "width": 32}).save_pretrained(folder)
    return reference


@pytest.mark.parametrize("weights_format", ["safetensors", "bin"])
def test_hugging_face_vit_folder_gives_the_original_models_logits(tmp_path, weights_format):
    reference = _hf_vit_folder(tmp_path / "vit", weights_format=weights_format)
    model = create_model("hf/ViTForImageClassification", 10, 3, weights=str(tmp_path / "vit")).eval()
    x = torch.rand(2, 3, 24, 24)
    pixels = (torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear")
              - torch.tensor(HF_MEAN).view(1, 3, 1, 1)) / torch.tensor(HF_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), reference(pixel_values=pixels).logits)


def test_hugging_face_folder_is_checked_like_a_timm_checkpoint(tmp_path):
    folder = tmp_path / "vit"
    reference = _hf_vit_folder(folder)
    with pytest.raises(ValueError, match=f"{folder} has a 10-class classification head but the dataset has 3 classes"):
        create_model("hf/ViTForImageClassification", 3, 3, weights=str(folder))
    estimator = create_model("hf/ViTForImageClassification", 3, 3, weights=str(folder), reinit_head=True)
    assert estimator(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    torch.testing.assert_close(estimator[-1].model.vit.embeddings.patch_embeddings.projection.weight,
                               reference.vit.embeddings.patch_embeddings.projection.weight)
    with pytest.raises(ValueError, match=r"'input_size' of hf/ViTForImageClassification must be 32 \(image_size"):
        create_model("hf/ViTForImageClassification", 10, 3, weights=str(folder), input_size=100)
    with pytest.raises(ValueError, match="arch 'hf/ViTForImageClassification'"):
        create_model("timm/vit_base_patch16_224", 10, 3, weights=str(folder))
    with pytest.raises(ValueError, match="holds a 'vit' model, not a BeitForImageClassification"):
        create_model("hf/BeitForImageClassification", 10, 3, weights=str(folder))
    with pytest.raises(ValueError, match="unknown transformers model class 'NoSuchModel'"):
        create_model("hf/NoSuchModel", 10, 3, weights=str(folder))
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(ValueError, match="gives no input normalization"):
        create_model("hf/ViTForImageClassification", 10, 3, weights=str(folder))
    assert create_model("hf/ViTForImageClassification", 10, 3, weights=str(folder), mean=[0.5] * 3, std=[0.5] * 3)


def test_a_hugging_face_folder_without_config_or_with_broken_weights_is_one_error(tmp_path):
    folder = tmp_path / "vit"
    _hf_vit_folder(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=re.escape(f"the weights of Hugging Face model folder {folder} cannot be "
                                                   "read, or are truncated: ")):
        create_model("hf/ViTForImageClassification", 10, 3, weights=str(folder))
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=re.escape(f"{folder} is not a Hugging Face model folder (no config.json), "
                                                   "which hf/ViTForImageClassification needs")):
        create_model("hf/ViTForImageClassification", 10, 3, weights=str(folder))


def test_fetch_pretrained_stores_a_hugging_face_folder_as_a_rebuildable_checkpoint(tmp_path):
    folder = tmp_path / "vit"
    _hf_vit_folder(folder, num_channels=1)
    prepare_dataset("digits", tmp_path / "data", seed=0)
    out = tmp_path / "clf.safetensors"
    main(["fetch-pretrained", "--dataset", "digits", "--root", str(tmp_path / "data"),
          "--arch", "hf/ViTForImageClassification", "--weights", str(folder), "--out", str(out)])
    model, meta = load_checkpoint(out)
    assert meta["model_kwargs"]["mean"] == pytest.approx(HF_MEAN[:1]) and meta["model_kwargs"]["input_size"] == 32
    direct = create_model("hf/ViTForImageClassification", 10, 1, weights=str(folder)).eval()
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(model(x), direct(x))


@pytest.mark.parametrize("size", [4, 8, 6])
def test_the_pool_that_hands_on_inputs_of_its_size_equals_torchs_in_values_and_gradients(size):
    """digits_cnn's pool: at 4×4 (8×8 digits) it returns its input; elsewhere it is torch's adaptive pool."""
    x = torch.randn(16, 8, size, size, dtype=torch.float64, requires_grad=True)
    ours, torchs = AdaptiveAvgPool2d(4)(x), torch.nn.AdaptiveAvgPool2d(4)(x)
    assert torch.equal(ours, torchs)
    weights = torch.randn_like(torchs)
    assert torch.equal(*(torch.autograd.grad((out * weights).sum(), x)[0] for out in (ours, torchs)))
    assert (ours is x) == (size == 4)
