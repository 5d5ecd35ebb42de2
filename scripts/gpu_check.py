"""GPU check of the paper's denoised-smoothing path on tiny stand-ins: `.venv/bin/python scripts/gpu_check.py`.

On a CUDA machine, in a few minutes, it builds the stand-ins of tests/standins.py (the tiny converted
improved-/guided-diffusion denoisers and tiny timm classifiers), then prints ONE line to stdout:

- cifar10_global / cifar10_dual / imagenet_global / imagenet_dual: certified inputs (predicted, of those tried)
  of a global-sigma and a dual certificate on stand-in inputs, on the GPU;
- fp16_agree / fp16_max_dr, bf16_agree / bf16_max_dr: fraction of equal predictions and largest radius
  difference of the global certificates under autocast against float32 (same noise): fp16 runs the UNet and
  the classifier in float16; bf16 runs the classifier in bfloat16 and the UNet in float16, the one autocast
  dtype DiffusionDenoiser has;
- slots: dualrs.gpu_slots on this machine's GPU(s): pinned slot, a second claim refused while held, granted
  after release;
- certify/cohen, certify/forward: benchmarks.certify's throughput ratios of Smooth.certify on the CIFAR-10
  stand-in (denoiser + classifier);
- tflops: achieved TFLOP/s of a ViT-B/16 forward pass at 224x224, batch 64, under bfloat16 autocast (FLOPs
  counted by dualrs.compute): the rate for `scripts/gpu_budget.py --tflops`;
- seconds: the wall time.

Everything else goes to stderr. Without CUDA it exits with status 2.
"""
from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchmarks.certify import Clock, certify_over_cohen, certify_over_forward  # noqa: E402
from dualrs import gpu_slots  # noqa: E402
from dualrs.compute import forward_flops  # noqa: E402
from dualrs.denoise import DiffusionDenoiser  # noqa: E402
from dualrs.dual import DualSmooth  # noqa: E402
from dualrs.memory import build_on_meta  # noqa: E402
from dualrs.models import create_model  # noqa: E402
from dualrs.seeding import sample_generator  # noqa: E402
from dualrs.smoothing import Smooth  # noqa: E402
from standins import merged_config, num_classes, write_classifiers, write_denoisers  # noqa: E402

N0, N, BATCH, INPUTS = 32, 256, 128, 4
ALPHA = BETA = 0.0005
INPUT_SIDE = {"cifar10": 32, "imagenet": 224}
ESTIMATOR = {"cifar10": "cifar_resnet20", "imagenet": "timm/test_resnet"}


def no_cuda_exit() -> None:
    """Exit with status 2 and one line on stderr when no CUDA device is visible."""
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a machine "
              "with an NVIDIA GPU and a CUDA build of torch", file=sys.stderr)
        sys.exit(2)


def check_slots(count: int, directory: Path) -> str:
    """Pin a GPU as a job does, check a second claim is refused while it is held and granted after release."""
    env = {gpu_slots.LOCK_DIR_VARIABLE: str(directory)}
    slot = gpu_slots.pin_gpu(count, env)
    held = [gpu_slots.try_claim(count, directory) for _ in range(count)]
    refused = held[-1] is None and env["CUDA_VISIBLE_DEVICES"] == str(slot.index)
    for other in filter(None, held):
        other.release()
    slot.release()
    again = gpu_slots.try_claim(count, directory)
    granted = again is not None and again.index == 0
    if again is not None:
        again.release()
    return f"pin{slot.index}" + (",refused" if refused else ",NOT-refused") + (",granted" if granted else ",NOT-granted")


class Models:
    """One experiment's stand-in denoiser, classifier and (untrained) estimator on the GPU."""

    def __init__(self, work: Path, config: dict, experiment: str, device: torch.device):
        cfg = config["experiments"][experiment]
        self.sigmas = sorted(float(s) for s in cfg["sigmas"])
        self.num_classes = num_classes(config, experiment)
        self.path = work / cfg["denoiser"]["path"]
        self.classifier = create_model(cfg["classifier"]["arch"], self.num_classes, 3, **cfg["classifier"]["options"],
                                       weights=str(work / cfg["classifier"]["weights"])).to(device).eval()
        torch.manual_seed(0)
        self.estimator = create_model(ESTIMATOR[experiment], len(self.sigmas), 3).to(device).eval()
        self.device = device

    def denoised(self, model: torch.nn.Module, sigma: float, autocast: bool) -> torch.nn.Module:
        denoiser = DiffusionDenoiser.from_pretrained(self.path, sigma, autocast=autocast).to(self.device)
        return torch.nn.Sequential(denoiser, model).eval().requires_grad_(False)

    def smooth(self, sigma: float, autocast: bool = True, dtype: torch.dtype | None = None) -> Smooth:
        return Smooth(self.denoised(self.classifier, sigma, autocast), self.num_classes, sigma, autocast=dtype)

    def dual(self) -> DualSmooth:
        classifiers = {s: self.denoised(self.classifier, s, True) for s in self.sigmas}
        sigma_e = max(self.sigmas)
        return DualSmooth(self.denoised(self.estimator, sigma_e, True), classifiers, sigma_e, self.num_classes)


def inputs(experiment: str, device: torch.device) -> torch.Tensor:
    side = INPUT_SIDE[experiment]
    return torch.rand((INPUTS, 3, side, side), generator=torch.Generator().manual_seed(0)).to(device)


def global_certificates(smooth: Smooth, xs: torch.Tensor) -> list[tuple[int, float]]:
    return [smooth.certify(x, N0, N, ALPHA, BATCH, sample_generator(0, "certify", i, xs.device))
            for i, x in enumerate(xs)]


def dual_certificates(dual: DualSmooth, xs: torch.Tensor) -> list[tuple[int, float]]:
    certs = [dual.certify(x, N0, N, ALPHA, BETA, BATCH, sample_generator(0, "certify-dual", i, xs.device))
             for i, x in enumerate(xs)]
    return [(c.prediction, c.radius) for c in certs]


def counted(certs: list[tuple[int, float]]) -> str:
    return f"{sum(p >= 0 for p, _ in certs)}/{len(certs)}"


def agreement(ref: list[tuple[int, float]], other: list[tuple[int, float]]) -> tuple[float, float]:
    """(fraction of equal predictions, largest |radius difference|)."""
    equal = sum(a[0] == b[0] for a, b in zip(ref, other)) / len(ref)
    return equal, max(abs(a[1] - b[1]) for a, b in zip(ref, other))


def precision_fields(models: dict[str, Models], xs: dict[str, torch.Tensor]) -> dict[str, str]:
    """Global certificates under fp16 and bf16 autocast against float32, pooled over experiments and sigmas."""
    pairs: dict[str, list[tuple[float, float]]] = {"fp16": [], "bf16": []}
    for name, m in models.items():
        for sigma in m.sigmas:
            ref = global_certificates(m.smooth(sigma, autocast=False), xs[name])
            runs = {"fp16": m.smooth(sigma, True, torch.float16), "bf16": m.smooth(sigma, True, torch.bfloat16)}
            for mode, smooth in runs.items():
                pairs[mode].append(agreement(ref, global_certificates(smooth, xs[name])))
    fields = {}
    for mode, values in pairs.items():
        fields[f"{mode}_agree"] = f"{sum(v[0] for v in values) / len(values):.3f}"
        fields[f"{mode}_max_dr"] = f"{max(v[1] for v in values):.4f}"
    return fields


def throughput_fields(m: Models, xs: torch.Tensor, clock: Clock) -> dict[str, str]:
    """benchmarks.certify's ratios on the CIFAR-10 stand-in at its middle sigma."""
    smooth = m.smooth(m.sigmas[len(m.sigmas) // 2])
    cohen = certify_over_cohen(smooth, xs, 4 * N, BATCH, clock, {})
    forward = certify_over_forward(smooth, xs, 4 * N, BATCH, clock, {})
    return {"certify/cohen": f"{cohen:.2f}", "certify/forward": f"{forward:.2f}"}


def tflops_field(device: torch.device, batch: int = 64, repeats: int = 10) -> dict[str, str]:
    """Achieved TFLOP/s of ViT-B/16 inference under bfloat16 autocast, FLOPs counted on the meta device."""
    build = lambda: create_model("timm/vit_base_patch16_224", 10, 3, input_size=224)  # noqa: E731
    flops = forward_flops(build_on_meta(build), (3, 224, 224)) * batch
    model = build().to(device).eval()
    x = torch.rand(batch, 3, 224, 224, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        torch.cuda.synchronize()
    return {"tflops": f"{flops * repeats / (time.perf_counter() - start) / 1e12:.1f}"}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


def run(work: Path, device: torch.device) -> dict[str, str]:
    """Every measurement but the slots, on ``device``."""
    fields = {}
    config = merged_config()
    write_denoisers(work, config)
    write_classifiers(work, config)
    models = {name: Models(work, config, name, device) for name in INPUT_SIDE}
    xs = {name: inputs(name, device) for name in INPUT_SIDE}
    with torch.inference_mode():
        for name, m in models.items():
            fields[f"{name}_global"] = counted(global_certificates(m.smooth(max(m.sigmas)), xs[name]))
            fields[f"{name}_dual"] = counted(dual_certificates(m.dual(), xs[name]))
        fields.update(precision_fields(models, xs))
        fields.update(throughput_fields(models["cifar10"], xs["cifar10"], Clock(device)))
        fields.update(tflops_field(device))
    return fields


def main() -> None:
    no_cuda_exit()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dualrs-gpu-check-") as work, stdout_to_stderr():
        fields = {"slots": check_slots(torch.cuda.device_count(), Path(work) / "locks"),
                  "device": torch.cuda.get_device_name().replace(" ", "_")}
        fields.update(run(Path(work), torch.device("cuda")))
    fields["seconds"] = f"{math.ceil(time.perf_counter() - start)}"
    print("gpu_check: " + " ".join(f"{key}={value}" for key, value in fields.items()))


if __name__ == "__main__":
    main()
