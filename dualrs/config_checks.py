"""Checks of the pipeline configuration that its JSON schema cannot express.

Each check returns problem lines ``config: <key>: <what is wrong>`` (empty when the configuration is
sound), so the workflow refuses a bad value before its first job, naming the key; the checks need no
Snakemake and import no torch (the model checks import timm or transformers only for archs that
name them, and timm not for a name :mod:`dualrs.timm_names` remembers). The workflow (``workflow/rules/common.smk``) runs them on the merged configuration.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from dualrs import timm_names
from dualrs.plugins import DATASETS_GROUP, MODELS_GROUP, plugin_names

#: File names spell a σ as ``sigma<spelling>`` with this pattern (the ``sigma`` wildcard).
SIGMA_PATTERN = r"[0-9]+(\.[0-9]+)?"
NAMED_NOISES = ("per_sigma", "mixed")  # values of classifier.noise other than a number
#: Builders of ``dualrs.models`` (tests keep this equal to its registry; importing it would load torch).
REGISTRY_OPTIONS = {"cifar_resnet110": ("depth",), "cifar_resnet20": (), "digits_cnn": ("width",),
                    "digits_mlp": ("width",)}
REGISTRY_ARCHS = tuple(sorted(REGISTRY_OPTIONS))
#: Built-in datasets of ``dualrs.data`` (tests keep this equal to its registry).
REGISTRY_DATASETS = ("cifar10", "digits", "imagenet")
#: Folders the report writes beside the experiments' own ``results/<experiment>``.
RESERVED_EXPERIMENTS = ("ablations", "figures", "tables")
#: Samples of scikit-learn's digits (``load_digits``) and its classes; CIFAR-10's splits.
DIGITS_SAMPLES, DIGITS_CLASSES = 1797, 10
CIFAR10_SPLITS = {"train": 50000, "test": 10000}
#: Extensions torchvision's ImageFolder reads (``torchvision.datasets.folder.IMG_EXTENSIONS``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def config_key(path: Iterable[str | int]) -> str:
    """``experiments.digits.sigmas[1]`` from a path of keys and list indices."""
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return key.lstrip(".") or "(top level)"


# ------------------------------------------------------------------ numbers in file names


def number_spelling(value: float) -> str:
    """``value`` as file names spell it: ``%g`` (six significant digits: 0.25, 1, 1e-05). ValueError
    when the spelling reads back as another number (more than six significant digits, NaN, inf), so
    that a path always stands for exactly the configured value."""
    spelling = f"{float(value):g}"
    if not math.isfinite(float(value)):
        raise ValueError(f"{value!r} is not a finite number, which file names cannot spell")
    if float(spelling) != float(value):
        raise ValueError(f"{value!r} has no exact file-name spelling ({spelling!r} reads back as another "
                         "number): use at most 6 significant digits")
    return spelling


def sigma_spelling(sigma: float | str) -> str:
    """σ in file names (``classifier_sigma0.25.safetensors``): :func:`number_spelling` matching
    :data:`SIGMA_PATTERN`, i.e. 0 or a value in [1e-4, 1e6) with at most six significant digits.
    Paths are made with this function and the configuration is checked with it, so they agree."""
    spelling = number_spelling(float(sigma))
    if not re.fullmatch(SIGMA_PATTERN, spelling):
        raise ValueError(f"sigma {sigma!r} has no file-name spelling: it would be {spelling!r}, but file names "
                         f"spell sigma as {SIGMA_PATTERN} (no sign, no exponent); use a sigma in "
                         "[0.0001, 1e+06) with at most 6 significant digits")
    return spelling


def _spelling_problem(spell: Callable[[Any], str], value: Any, key: str) -> list[str]:
    try:
        spell(value)
    except ValueError as error:
        return [f"config: {key}: {error}"]
    return []


# ------------------------------------------------------------------ YAML and types


_AMBIGUOUS_INT = re.compile(r"[-+]?(0[0-7_]+|[1-9][0-9_]*(:[0-5]?[0-9])+)")


SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # YAML's safe loader, libyaml's where PyYAML has it


class _StrictLoader(SAFE_LOADER):
    """YAML's safe loader that records duplicate keys and YAML 1.1 integers spelled unlike decimals."""

    problems: list[str]

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            where = f"{key_node.start_mark.name}:{line}"
            if key in seen:
                self.problems.append(f"{where}: key {key!r} is given twice (also on line {seen[key]}); YAML would "
                                     "keep only the last value")
            seen.setdefault(key, line)
            if (isinstance(value_node, yaml.ScalarNode) and value_node.tag == "tag:yaml.org,2002:int"
                    and not value_node.style  # plain: None from PyYAML's parser, "" from libyaml's
                    and _AMBIGUOUS_INT.fullmatch(value_node.value)):
                number = self.construct_object(value_node)
                self.problems.append(f"{where}: {key}: {value_node.value} reads as {number} in YAML 1.1 (octal or "
                                     f"base 60); write {number} if that is meant")
        return super().construct_mapping(node, deep=deep)


def yaml_problems(paths: Iterable[str | Path]) -> list[str]:
    """Duplicate keys (YAML silently keeps the last) and integers YAML 1.1 reads as octal or base 60
    (``010`` is 8, ``1:30`` is 90) in the configuration files ``paths``."""
    problems: list[str] = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            loader = _StrictLoader(handle)
            loader.name = str(path)
            loader.problems = problems
            try:
                loader.get_single_data()
            except yaml.YAMLError:
                pass  # Snakemake reports files it cannot read
            finally:
                loader.dispose()
    return problems


def _strict_integers(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator of ``schema`` whose integers exclude floats (jsonschema accepts 1e4 as an integer)."""
    cls = jsonschema.validators.validator_for(schema)
    checker = cls.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(cls, type_checker=checker)(schema)


def _errors(errors: Iterable[jsonschema.ValidationError]) -> Iterator[jsonschema.ValidationError]:
    for error in errors:
        yield error
        yield from _errors(error.context or [])


def whole_floats_to_int(config: dict, schema: Mapping[str, Any]) -> None:
    """Write every whole-number float of an integer key (``n: 1.0e+4``, which YAML 1.1 reads as a
    float, while ``1e4`` is text) as the int it is, in place, so counts reach the commands as 10000."""
    for error in _errors(_strict_integers(schema).iter_errors(config)):
        value = error.instance
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        if (error.validator == "type" and "integer" in types and isinstance(value, float)
                and value.is_integer()):
            *parents, last = error.absolute_path
            node = config
            for part in parents:
                node = node[part]
            node[last] = int(value)


def numeric_text_hint(text: str, types: str | list[str]) -> str:
    """What to write instead of a number YAML reads as text: ``1e4``, ``1e-3`` (YAML 1.1 wants a dot and a
    signed exponent) or a quoted number."""
    value = float(text)
    if "e" not in text.lower():
        return " (a number in quotes is text: write it without quotes)"
    if "integer" in types and value.is_integer() and math.isfinite(value):
        return f" (YAML reads numbers like 1e4 as text: write {int(value)})"
    return " (YAML reads numbers like 1e-3 as text: write 1.0e-3 or 0.001)"


# ------------------------------------------------------------------ split sizes


def _image_files(folder: Path) -> Iterator[str]:
    """Names of the files ImageFolder lists (those in class subfolders), else of the flat folder's files."""
    with os.scandir(folder) as entries:
        entries = list(entries)
    subfolders = sorted(entry.path for entry in entries if entry.is_dir())
    if not subfolders:
        yield from (entry.name for entry in entries)
    for sub in subfolders:
        with os.scandir(sub) as files:
            yield from (file.name for file in files)


def _images_in(folder: Path, enough: int) -> int:
    """Images in ``folder`` (:func:`_image_files` with an image extension), counted up to ``enough``."""
    count = 0
    for name in _image_files(folder):
        count += name.lower().endswith(IMAGE_EXTENSIONS)
        if count >= enough:
            break
    return count


def _split_inputs(config: Mapping[str, Any], dataset: str, split: str, enough: int) -> tuple[int, str] | None:
    """Inputs of ``split`` after the dataset's own subsampling (counted up to ``enough`` for ImageNet) and
    where the number comes from; None when unknown (an ImageNet folder that does not exist yet, a plugin's
    dataset)."""
    options = config["data"].get(dataset, {})
    if dataset == "digits":
        test = math.ceil(options.get("test_fraction", 0.3) * DIGITS_SAMPLES)  # scikit-learn's rounding
        inputs = {"test": test, "train": DIGITS_SAMPLES - test}[split]
        return inputs, f"data.digits.test_fraction keeps {inputs} of the {DIGITS_SAMPLES} digits for {split}"
    if dataset == "cifar10":
        every = options.get("test_every", 1) if split == "test" else 1
        inputs = math.ceil(CIFAR10_SPLITS[split] / every)
        return inputs, f"CIFAR-10 has {inputs} {split} images" + (
            f" with data.cifar10.test_every = {every}" if every > 1 else "")
    if dataset != "imagenet":
        return None  # a plugin's dataset: its size is known when it is prepared
    key, every_key = ("source", "every") if split == "test" else ("train_source", "train_every")
    source, every = options.get(key), options.get(every_key, 100)
    if source is None or not Path(source).expanduser().is_dir():
        return None
    images = _images_in(Path(source).expanduser(), (enough - 1) * every + 1)
    inputs = math.ceil(images / every)
    return inputs, (f"{source} (data.imagenet.{key}) has {'at least ' if inputs >= enough else ''}{images} "
                    f"images, of which data.imagenet.{every_key} = {every} keeps {inputs}")


def _sampling_problems(config: Mapping[str, Any], name: str, key: str, split: str) -> list[str]:
    """Every shard of a sampling block must get at least one input: shard k takes the selected inputs
    k, k + shards, ... of every ``every``-th input of the split."""
    cfg = config["experiments"][name]
    settings = cfg
    for part in key.split("."):
        settings = settings.get(part) if isinstance(settings, Mapping) else None
    if not settings:
        return []
    every, shards = settings.get("every", 1), settings.get("shards", 1)
    found = _split_inputs(config, cfg["data"], split, (shards - 1) * every + 1)
    if found is None:
        return []
    inputs, where = found
    selected = math.ceil(inputs / every)
    if inputs == 0:
        return [f"config: experiments.{name}.{key}: the {split} split is empty ({where})"]
    if selected < shards:
        return [f"config: experiments.{name}.{key}.shards is {shards}, but every = {every} selects {selected} "
                f"{split} input(s) ({where}): {shards - selected} shard job(s) would have no input; "
                f"use shards <= {selected} or a smaller every"]
    return []


def dataset_names() -> list[str]:
    """Built-in datasets and those of installed plugins (:mod:`dualrs.plugins`), without importing either."""
    return sorted({*REGISTRY_DATASETS, *plugin_names(DATASETS_GROUP)})


def data_problems(config: Mapping[str, Any]) -> list[str]:
    """Dataset names, and options that would fail or mislead when the data are prepared or loaded."""
    known = dataset_names()
    problems = [f"config: data.{name}: unknown dataset {name!r}; known: {', '.join(known)} (others are added "
                f"by installing a package with a {DATASETS_GROUP!r} entry point)"
                for name in config["data"] if name not in known]
    problems += [f"config: experiments.{name}.data: unknown dataset {cfg['data']!r}; known: {', '.join(known)}"
                 for name, cfg in config["experiments"].items() if cfg["data"] not in known]
    digits = config["data"].get("digits", {})
    if "test_fraction" in digits:
        test = math.ceil(digits["test_fraction"] * DIGITS_SAMPLES)
        for split, size in (("test", test), ("train", DIGITS_SAMPLES - test)):
            if size < DIGITS_CLASSES:
                problems.append(
                    f"config: data.digits.test_fraction is {digits['test_fraction']:g}, which leaves {size} of the "
                    f"{DIGITS_SAMPLES} digits for {split}; a split stratified by class needs at least "
                    f"{DIGITS_CLASSES} (one per class)")
    imagenet = config["data"].get("imagenet", {})
    if imagenet.get("crop", 256) > imagenet.get("resize", 256):
        problems.append(
            f"config: data.imagenet.crop is {imagenet['crop']}, above resize = {imagenet.get('resize', 256)}: the "
            "centre crop would pad the resized image with black borders; use crop <= resize")
    return problems


# ------------------------------------------------------------------ architectures


def arch_problems(arch: str, key: str) -> list[str]:
    """A registry name, ``timm/<name>`` or ``hf/<class>``; the names after the prefixes are checked by
    :func:`model_problems`."""
    if arch.startswith(("timm/", "hf/")):
        return [] if arch.partition("/")[2] else [f"config: {key}: {arch!r} names no model after the prefix"]
    known = sorted({*REGISTRY_ARCHS, *plugin_names(MODELS_GROUP)})
    if arch in known:
        return []
    return [f"config: {key}: unknown architecture {arch!r}; known: {', '.join(known)}, "
            f"timm/<timm model name>, hf/<transformers class> (others are added by installing a package with a "
            f"{MODELS_GROUP!r} entry point)"]


def weights_refused(arch: str) -> str | None:
    """Why ``arch`` takes no initial weights: a registry architecture is built from scratch (weights initialise
    timm/ and hf/ models, and plugins that take them); None where it may."""
    return (f"{arch} is built from scratch and takes no weights (they initialise timm/ and hf/ models)"
            if arch in REGISTRY_ARCHS else None)


def options_problems(arch: str, options: Mapping[str, Any], key: str) -> list[str]:
    """A registry architecture's options are keywords of its builder, each a positive integer (timm, transformers
    and plugin architectures check their own)."""
    if arch not in REGISTRY_OPTIONS:
        return []
    takes = REGISTRY_OPTIONS[arch]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        return [f"config: {key}: {arch} takes no option {', '.join(map(repr, unknown))}; its options: "
                f"{', '.join(takes) or 'none'}"]
    return [f"config: {key}.{name}: {value!r} is not a positive integer" for name, value in options.items()
            if isinstance(value, bool) or not isinstance(value, int) or value < 1]


def _timm_problem(name: str, key: str) -> str | None:
    if ":" not in name and timm_names.remembered(name.split(".")[0]):  # no source prefix; the tag aside
        return None
    import timm
    from timm.models import parse_model_name

    timm_names.remember(timm.list_models())
    source, _ = parse_model_name(name)
    if source is not None or timm.is_model(name):  # hf-hub: and local-dir: sources name their own config
        return None
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
    return (f"config: {key}: timm has no model {name!r} (timm {timm.__version__})"
            + (f"; similar: {', '.join(close)}" if close else ""))


def _hf_problem(name: str, key: str) -> str | None:
    import transformers

    cls = getattr(transformers, name, None)
    if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
        return None
    return (f"config: {key}: transformers has no model class {name!r} (transformers {transformers.__version__}), "
            "e.g. hf/ViTForImageClassification")


def _weights_problem(arch: str, weights: str | None, key: str) -> str | None:
    """A timm arch takes a checkpoint file, an hf/ arch a model folder (where the path exists)."""
    if weights is None or not Path(weights).exists():
        return None
    if arch.startswith("hf/") and not (Path(weights) / "config.json").is_file():
        return f"config: {key}: {weights} is not a Hugging Face model folder (no config.json), which {arch} needs"
    if not arch.startswith("hf/") and not Path(weights).is_file():
        return f"config: {key}: {weights} is a folder, but {arch} takes a checkpoint file (.safetensors or .pth)"
    return None


def model_problems(name: str, cfg: Mapping[str, Any]) -> list[str]:
    """The timm models and transformers classes an experiment names exist, and its weights have the
    form its archs read. Imports timm / transformers only when an arch names them."""
    where = f"experiments.{name}"
    archs = [(cfg["classifier"]["arch"], f"{where}.classifier.arch"),
             (cfg["estimator"]["arch"], f"{where}.estimator.arch")]
    archs += [(arch, f"{where}.ablations.estimator_arch[{i}]")
              for i, arch in enumerate(cfg.get("ablations", {}).get("estimator_arch", []))]
    problems = []
    for arch, key in archs:
        prefix, _, model = arch.partition("/")
        problem = (_timm_problem(model, key) if prefix == "timm" else
                   _hf_problem(model, key) if prefix == "hf" else None)
        problems += [problem] if problem else []
    for part in ("classifier", "estimator"):
        problem = _weights_problem(cfg[part]["arch"], cfg[part].get("weights"), f"{where}.{part}.weights")
        problems += [problem] if problem else []
    return problems


# ------------------------------------------------------------------ one experiment


def _experiment_arch_problems(name: str, cfg: Mapping[str, Any]) -> list[str]:
    where = f"experiments.{name}"
    problems = arch_problems(cfg["classifier"]["arch"], f"{where}.classifier.arch")
    problems += arch_problems(cfg["estimator"]["arch"], f"{where}.estimator.arch")
    for i, arch in enumerate(cfg.get("ablations", {}).get("estimator_arch", [])):
        problems += arch_problems(arch, f"{where}.ablations.estimator_arch[{i}]")
    for part in ("classifier", "estimator"):
        problems += options_problems(cfg[part]["arch"], cfg[part].get("options", {}), f"{where}.{part}.options")
        if cfg[part].get("weights") is not None and (problem := weights_refused(cfg[part]["arch"])):
            problems.append(f"config: {where}.{part}.weights: {problem}")
        if cfg[part]["arch"].startswith("hf/") and not cfg[part].get("weights"):
            problems.append(f"config: {where}.{part}.arch {cfg[part]['arch']} is built from a Hugging Face model "
                            f"folder: set {where}.{part}.weights")
    if cfg["estimator"]["arch"].startswith("hf/") and "router" in cfg:
        problems.append(f"config: {where}.router: the router is trained from scratch with estimator.arch "
                        f"{cfg['estimator']['arch']}, which needs weights (a Hugging Face model folder); use a "
                        "timm/ or registry estimator.arch with a router")
    return problems


def _sigma_problems(name: str, cfg: Mapping[str, Any]) -> list[str]:
    where = f"experiments.{name}"
    problems = [p for i, s in enumerate(cfg["sigmas"]) for p in _spelling_problem(sigma_spelling, s, f"{where}.sigmas[{i}]")]
    noise = cfg["classifier"].get("noise", "per_sigma")
    if noise not in NAMED_NOISES:
        problems += _spelling_problem(sigma_spelling, noise, f"{where}.classifier.noise")
    return problems


def _late_milestones(settings: Mapping[str, Any] | None, key: str) -> list[str]:
    """Milestones at or after the last epoch never decay the learning rate (an overlay that shortens
    training, as config/quick.yaml does, cannot delete them: a warning, not an error)."""
    if not settings:
        return []
    late = [m for m in settings.get("milestones", []) if m >= settings["epochs"]]
    return [f"config: {key}.milestones {late} lie at or after epochs = {settings['epochs']}: the learning rate "
            "never decays there"] if late else []


def _ablation_problems(name: str, cfg: Mapping[str, Any]) -> list[str]:
    """[alpha, beta] pairs that certify something; numbers (and sigma_e values) spelled exactly and distinctly
    in paths; candidate sets of the experiment's sigmas."""
    where = f"experiments.{name}.ablations"
    ablations = cfg.get("ablations", {})
    problems = []
    for i, (alpha, beta) in enumerate(ablations.get("alpha_beta", [])):
        if alpha + beta >= 0.5:
            problems.append(f"config: {where}.alpha_beta[{i}]: alpha + beta = {alpha + beta:g} must lie below 0.5: "
                            "the dual certificate fails with probability up to alpha + beta")
    for ablation in ("lam", "label_precision", "train_fraction", "temperature", "alpha_beta"):
        numbers = [(i, j, x) for i, value in enumerate(ablations.get(ablation, []))
                   for j, x in enumerate(value if isinstance(value, list) else [value]) if not isinstance(x, str)]
        spelled = ["_".join(f"{x:g}" for x in value) if isinstance(value, list) else f"{value}"
                   if isinstance(value, str) else f"{value:g}" for value in ablations.get(ablation, [])]
        if len(set(spelled)) != len(spelled):
            problems.append(f"config: {where}.{ablation} has values that coincide in paths: {spelled}")
            continue
        for i, j, x in numbers:
            key = f"{where}.{ablation}[{i}]" + (f"[{j}]" if ablation == "alpha_beta" else "")
            problems += _spelling_problem(number_spelling, x, key)
    for i, sigma_e in enumerate(ablations.get("sigma_e", [])):
        problems += _spelling_problem(sigma_spelling, sigma_e, f"{where}.sigma_e[{i}]")
    own = set(cfg["sigmas"])
    for subset in ablations.get("sigmas", []):
        if not set(subset) <= own:
            problems.append(f"config: {where}.sigmas: {subset} is not a set of at least two distinct sigmas of "
                            f"experiments.{name}.sigmas = {list(cfg['sigmas'])}")
    return problems


def experiment_problems(config: Mapping[str, Any], name: str) -> list[str]:
    """Cross-key rules of experiment ``name`` (after schema validation with defaults filled in)."""
    cfg = config["experiments"][name]
    where = f"experiments.{name}"
    problems = []
    if name in RESERVED_EXPERIMENTS:
        problems.append(f"config: {where}: the name {name!r} is reserved (results/{name}/ holds every experiment's "
                        f"{name}); rename the experiment")
    if cfg["data"] in ("cifar10", "imagenet") and cfg["data"] not in config["data"]:
        problems.append(f"config: {where}.data is {cfg['data']!r}, but `data` has no block {cfg['data']!r}")
    if cfg["data"] == "imagenet" and config["data"].get("imagenet", {}).get("train_source") is None:
        problems.append(f"config: {where}.data is imagenet, whose training split (labels, finetuning) needs "
                        "data.imagenet.train_source")
    if cfg["data"] != "digits":  # the schema allows only options of digits in data_options
        problems += [f"config: {where}.data_options.{option} is an option of digits, not of {cfg['data']!r}"
                     for option in sorted(cfg["data_options"])]
    classifier = cfg["classifier"]
    if classifier["weights"] is None and "train" not in classifier:
        problems.append(f"config: {where}.classifier needs `train` settings or off-the-shelf `weights`")
    if classifier["weights"] is not None and "denoiser" not in cfg:
        problems.append(f"config: {where}.classifier.weights (one off-the-shelf model for every sigma) needs a "
                        "`denoiser`")
    if classifier["noise"] == "mixed" and "denoiser" in cfg:
        problems.append(f"config: {where}.classifier.noise is mixed (noise drawn from Sigma), but with a `denoiser` "
                        "the classifier sees denoised inputs: give the noise it trains under as a number")
    if cfg["iterations"] > 1 and "finetune" not in cfg:
        problems.append(f"config: {where}.iterations is {cfg['iterations']}, which needs a `finetune` block")
    if cfg["iterations"] > 2 and not cfg["retrain_estimator"]:
        problems.append(f"config: {where}.iterations is {cfg['iterations']}: finetuning round k routes with round "
                        "k-1's estimator, so rounds beyond 2 need retrain_estimator: true")
    certify = cfg["certify"]
    if certify["alpha"] + certify["beta"] >= 0.5:
        problems.append(
            f"config: {where}.certify: alpha + beta = {certify['alpha'] + certify['beta']:g} must lie below 0.5: "
            "the dual certificate fails with probability up to alpha + beta, and the cascade baseline spends "
            "alpha + beta in one bound, which certifies nothing at 0.5 or more")
    if "radius_precision" in certify:
        problems.append(f"config: {where}.certify.radius_precision applies to labels only: test samples are "
                        "certified with the fixed n (sequential sampling of dual RS is certify.adaptive)")
    problems += _sigma_problems(name, cfg) + _experiment_arch_problems(name, cfg)
    names = [expert["name"] for expert in cfg.get("router", {}).get("experts", [])]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        problems.append(f"config: {where}.router.experts: name(s) {', '.join(map(repr, twice))} given to more than "
                        "one expert; each names a table row and a file")
    problems += _ablation_problems(name, cfg)
    for key, split in (("label", "train"), ("certify", "test"), ("router.label", "train")):
        problems += _sampling_problems(config, name, key, split)
    return problems


def config_problems(config: Mapping[str, Any]) -> list[str]:
    """Every cross-key problem of a schema-valid configuration."""
    problems = data_problems(config)
    for name in config["experiments"]:
        problems += experiment_problems(config, name)
    problems += [f"config: default_targets names {name!r}, which is not in experiments"
                 for name in config["default_targets"] if name not in config["experiments"]]
    return problems


def router_problems(config: Mapping[str, Any], name: str, products: Callable[[str], Iterable[str]]) -> list[str]:
    """A router expert's ``results/<experiment>/...`` path must be a checkpoint that experiment builds
    (``products(experiment)``); other paths are checked for existence when the jobs are planned."""
    problems = []
    for i, spec in enumerate(config["experiments"][name].get("router", {}).get("experts", [])):
        for part in ("classifier", "denoiser"):
            path = spec.get(part)
            if not path or not str(path).startswith("results/"):
                continue
            key = f"experiments.{name}.router.experts[{i}].{part}"
            source = Path(path).parts[1]
            if source not in config["experiments"]:
                problems.append(f"config: {key} is {path}, but no experiment {source!r} builds it (experiments: "
                                f"{', '.join(config['experiments'])})")
            elif path not in (built := sorted(products(source))):
                problems.append(f"config: {key} is {path}, which experiment {source!r} does not build; it builds "
                                f"{', '.join(built)}")
    return problems


def config_warnings(config: Mapping[str, Any]) -> list[str]:
    """Keys that a configuration sets but that have no effect (an overlay cannot delete a key, so these
    warn rather than refuse)."""
    warnings = []
    for name, cfg in config["experiments"].items():
        where = f"experiments.{name}"
        warnings += _late_milestones(cfg["classifier"].get("train"), f"{where}.classifier.train")
        warnings += _late_milestones(cfg["estimator"]["train"], f"{where}.estimator.train")
        if cfg["classifier"]["weights"] is not None and "train" in cfg["classifier"]:
            warnings.append(f"config: {where}.classifier.train is ignored: classifier.weights is an off-the-shelf "
                            "classifier, not trained here")
        if cfg["iterations"] == 1:
            if "finetune" in cfg:
                warnings.append(f"config: {where}.finetune is ignored with iterations: 1 (no finetuning round)")
            if cfg["retrain_estimator"]:
                warnings.append(f"config: {where}.retrain_estimator is ignored with iterations: 1 (no finetuning "
                                "round whose estimator could be retrained)")
        for key, block in (("label", cfg["label"]), ("router.label", cfg.get("router", {}).get("label"))):
            if block and block.get("adaptive"):
                warnings.append(f"config: {where}.{key}.adaptive is ignored: labels sample sequentially with "
                                f"{key}.radius_precision (certify.adaptive is dual RS's sequential sampling)")
    return warnings
