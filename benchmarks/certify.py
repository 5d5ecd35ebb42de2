"""Certification throughput, in one run: ``python -m benchmarks.certify [--device cuda] [--compile]``.

Prints each measurement, then one summary line of ratios:

    certify/forward=<r1> certify/cohen=<r2> dual/standard=<r3> adaptive_saving=<s> acc_fixed=<a>
    acc_adaptive=<b> fixed_dual/standard=<r4> label_per_s=<x> peak_mb=<m>      (one line)

- certify/forward: samples/s of Smooth.certify over the raw batched forward samples/s of the same
  model at the same batch size (at most 1; the median over inputs of the ratio of adjacent timings);
- certify/cohen: time of the reference CERTIFY of Cohen et al. (benchmarks.cohen) over that of
  Smooth.certify, same model, n0, n and batch size (above 1: Smooth is faster);
- dual/standard: time of DualSmooth.certify(adaptive=True) over Smooth.certify at equal n0, n,
  batch size, over the digits test set (fixed_dual/standard: the same for fixed-n dual RS);
- adaptive_saving: forward passes of fixed-n over adaptive dual certification on that test set,
  the adaptive one settling the radius on the grid RADII (their certified accuracies on that grid,
  and the largest difference, are printed, and follow the ratio on the last line);
- label_per_s: training inputs certified per second at the experiment's label settings;
- peak_mb: peak memory of one Smooth.certify at the largest n measured, beyond what was allocated
  before it (CUDA: torch.cuda.max_memory_allocated; CPU: peak resident set size of a fresh
  process, Linux only, else nan), printed for two n at one batch size to show it does not grow with n.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.cohen import cohen_certify
from benchmarks.digits import digits_models, load_digits
from dualrs.dual import DualCertificate, DualSmooth
from dualrs.host_memory import keep_freed_memory
from dualrs.models import create_model
from dualrs.seeding import sample_generator
from dualrs.smoothing import Smooth

RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


def main() -> None:
    args = parse_args()
    keep_freed_memory()  # as every dualrs job does
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = yaml.safe_load(args.config.read_text())["experiments"][args.experiment]
    certify, label, batch_size = settings["certify"], settings["label"], args.batch_size or settings["batch_size"]
    sigmas = sorted(float(s) for s in settings["sigmas"])
    sigma_e = float(settings.get("sigma_e") or max(sigmas))
    gpu = device.type == "cuda"
    options = {"autocast": torch.bfloat16, "channels_last": True} if gpu else {}
    print(f"device {device} ({torch.cuda.get_device_name(device) if gpu else f'{torch.get_num_threads()} threads'})"
          f", batch size {batch_size}, options {options or 'none'}, compile {args.compile}")

    start = time.perf_counter()
    splits = load_digits(seed=0)
    models = digits_models(args.models, sigmas, sigma_e, splits["train"], args.epochs, args.label_votes, seed=0)
    classifiers = {s: prepared(m, device, gpu, args.compile) for s, m in models.classifiers.items()}
    estimator = prepared(models.estimator, device, gpu, args.compile)
    print(f"models: {models.source} in {time.perf_counter() - start:.1f} s")
    clock = Clock(device)
    x_test, y_test = (t.to(device) for t in splits["test"])
    x_train = splits["train"][0].to(device)
    middle = sigmas[len(sigmas) // 2]
    smooth = Smooth(classifiers[middle], 10, middle, **options)

    forward_ratio = certify_over_forward(smooth, x_test[: args.throughput_inputs], args.throughput_n, batch_size,
                                         clock, options)
    cohen_ratio = certify_over_cohen(smooth, x_test[: args.throughput_inputs], args.throughput_n, batch_size,
                                     clock, options)
    dual = DualSmooth(estimator, classifiers, sigma_e, 10, **options)
    indices = range(0, len(x_test), args.every)
    fixed_ratio, adaptive_ratio, saving, fixed_accuracy, adaptive_accuracy = dual_over_standard(
        dual, smooth, x_test, y_test, indices, certify, batch_size, device, clock)
    label_rate = labels_per_second(smooth, x_train[: args.label_inputs], label, batch_size, device, clock)
    peaks = {n: peak_memory_mb(models.classifiers[middle], middle, n, batch_size, device, options)
             for n in (args.throughput_n, 5 * args.throughput_n)}
    print("peak memory of one certify at batch size "
          f"{batch_size}: " + ", ".join(f"n={n}: {mb:.1f} MB" for n, mb in peaks.items()))
    print(f"fixed-n dual/standard={fixed_ratio:.3f}")
    print(f"total {time.perf_counter() - start:.0f} s")
    print(f"certify/forward={forward_ratio:.3f} certify/cohen={cohen_ratio:.3f} dual/standard={adaptive_ratio:.3f} "
          f"adaptive_saving={saving:.3f} acc_fixed={grid(fixed_accuracy)} acc_adaptive={grid(adaptive_accuracy)} "
          f"fixed_dual/standard={fixed_ratio:.3f} label_per_s={label_rate:.1f} "
          f"peak_mb={peaks[5 * args.throughput_n]:.1f}")


def grid(accuracy: np.ndarray) -> str:
    """Certified accuracies (%) at RADII joined by '/', e.g. 83.3/50.0/19.4/1.9/0.0."""
    return "/".join(f"{a:.1f}" for a in accuracy)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.certify", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast, channels_last)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the models")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"))
    parser.add_argument("--experiment", default="digits", help="config block giving Σ, σ_e and the settings")
    parser.add_argument("--models", type=Path, default=Path("results/digits/models"),
                        help="round-0 checkpoints; trained here when absent")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of quick training")
    parser.add_argument("--label-votes", type=int, default=32, help="noisy votes per input for quick labels")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the experiment's batch_size")
    parser.add_argument("--throughput-n", type=int, default=10_000, help="n of the throughput measurements")
    parser.add_argument("--throughput-inputs", type=int, default=8)
    parser.add_argument("--every", type=int, default=1, help="certify every k-th test input in the dual comparison")
    parser.add_argument("--label-inputs", type=int, default=100)
    return parser.parse_args()


def prepared(model: torch.nn.Module, device: torch.device, gpu: bool, compile: bool) -> torch.nn.Module:
    model = model.to(device).eval().requires_grad_(False)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


class Clock:
    """Wall time that waits for the device's queued work first."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def time(self, fn: Callable[[], object]) -> float:
        start = self()
        fn()
        return self() - start


@contextlib.contextmanager
def model_settings(device: torch.device, options: dict) -> Iterator[None]:
    """The autocast Smooth applies, for code that calls the model itself."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=options.get("autocast"),
                                                enabled="autocast" in options):
        yield


def certify_over_forward(
    smooth: Smooth, inputs: torch.Tensor, n: int, batch_size: int, clock: Clock, options: dict,
) -> float:
    """Samples/s of Smooth.certify (n0 = 100) over samples/s of model(batch) at the same batch size.

    The two alternate, one certification then as many forward batches; the ratio of each such pair
    is taken and the median over inputs returned, so that a load spike on a shared machine moves one
    pair, not the result.
    """
    n0, model, device = 100, smooth.base_classifier, inputs.device
    batch = inputs[0] + smooth.sigma * torch.randn((batch_size, *inputs.shape[1:]), device=device)
    if options.get("channels_last"):
        batch = batch.contiguous(memory_format=torch.channels_last)
    passes = math.ceil((n0 + n) / batch_size)

    def forward() -> None:
        with model_settings(device, options):
            for _ in range(passes):
                model(batch)

    smooth.certify(inputs[0], n0, n, 0.001, batch_size, sample_generator(0, "warm-up", 0, device))
    forward()
    certify_rates, forward_rates = [], []
    for i, x in enumerate(inputs):
        generator = sample_generator(0, "throughput", i, device)
        certify_rates.append((n0 + n) / clock.time(lambda: smooth.certify(x, n0, n, 0.001, batch_size, generator)))
        forward_rates.append(passes * batch_size / clock.time(forward))
    ratio = float(np.median(np.array(certify_rates) / np.array(forward_rates)))
    print(f"certify {np.median(certify_rates):,.0f} samples/s, forward {np.median(forward_rates):,.0f} samples/s "
          f"(n0={n0}, n={n}; medians over {len(inputs)} inputs, each certification timed next to its forward passes)")
    return ratio


def certify_over_cohen(
    smooth: Smooth, inputs: torch.Tensor, n: int, batch_size: int, clock: Clock, options: dict,
) -> float:
    """Time of the Cohen et al. reference over Smooth.certify, alternating per input."""
    n0, device, ours, theirs = 100, inputs.device, 0.0, 0.0
    for i, x in enumerate(inputs):
        ours += clock.time(lambda: smooth.certify(x, n0, n, 0.001, batch_size,
                                                  sample_generator(0, "cohen", i, device)))
        with model_settings(device, options):
            theirs += clock.time(lambda: cohen_certify(smooth.base_classifier, x, smooth.sigma, smooth.num_classes,
                                                       n0, n, 0.001, batch_size))
    print(f"certify {ours / len(inputs) * 1e3:.1f} ms/input, Cohen et al. reference "
          f"{theirs / len(inputs) * 1e3:.1f} ms/input")
    return theirs / ours


def dual_over_standard(
    dual: DualSmooth, smooth: Smooth, x: torch.Tensor, y: torch.Tensor, indices: range, certify: dict,
    batch_size: int, device: torch.device, clock: Clock,
) -> tuple[float, float, float, np.ndarray, np.ndarray]:
    """(fixed dual / standard time, adaptive dual / standard time, fixed / adaptive forward passes, and
    the certified accuracies (%) of fixed-n and adaptive dual RS on RADII)."""
    n0, n, alpha, beta = certify["n0"], certify["n"], certify["alpha"], certify["beta"]
    times = {"standard": 0.0, "fixed": 0.0, "adaptive": 0.0}
    certificates: dict[str, list[DualCertificate]] = {"fixed": [], "adaptive": []}
    for i in indices:
        generator = lambda stage: sample_generator(0, stage, i, device)  # noqa: E731
        times["standard"] += clock.time(lambda: smooth.certify(x[i], n0, n, alpha, batch_size, generator("certify")))
        for mode in ("fixed", "adaptive"):
            start = clock()
            certificates[mode].append(dual.certify(x[i], n0, n, alpha, beta, batch_size, generator("certify-dual"),
                                                   adaptive=mode == "adaptive", radii=RADII))
            times[mode] += clock() - start
    labels = y[list(indices)].cpu().numpy()
    passes = {mode: sum(c.samples for c in certs) for mode, certs in certificates.items()}
    print(f"dual RS on {len(labels)} test inputs (n0={n0}, n={n}, alpha={alpha}, beta={beta}): "
          f"standard {times['standard'] / len(labels) * 1e3:.1f} ms/input (sigma={smooth.sigma:g}, "
          f"{n0 + n} passes/input)")
    for mode, certs in certificates.items():
        accuracy = certified_accuracy(certs, labels)
        print(f"  {mode:8s} {times[mode] / len(labels) * 1e3:.1f} ms/input, {passes[mode] / len(labels):.0f} "
              f"passes/input, certified accuracy % " + " ".join(f"r={r:g}:{a:.1f}" for r, a in zip(RADII, accuracy)))
    fixed, adaptive = (certified_accuracy(certificates[mode], labels) for mode in ("fixed", "adaptive"))
    gap = np.abs(fixed - adaptive)
    print(f"  adaptive vs fixed: largest certified-accuracy difference {gap.max():.2f} points")
    return (times["fixed"] / times["standard"], times["adaptive"] / times["standard"],
            passes["fixed"] / passes["adaptive"], fixed, adaptive)


def certified_accuracy(certificates: list[DualCertificate], labels: np.ndarray) -> np.ndarray:
    """Percentage of inputs predicted correctly with radius ≥ r, for r in RADII."""
    radius = np.array([c.radius for c in certificates])
    correct = np.array([c.prediction for c in certificates]) == labels
    return np.array([100 * np.mean(correct & (radius >= r)) for r in RADII])


def labels_per_second(
    smooth: Smooth, inputs: torch.Tensor, label: dict, batch_size: int, device: torch.device, clock: Clock,
) -> float:
    """Training inputs certified per second with the label settings (Smooth.certify_bound)."""
    elapsed = clock.time(lambda: [smooth.certify_bound(x, label["n0"], label["n"], label["alpha"], batch_size,
                                                       sample_generator(0, "label", i, device))
                                  for i, x in enumerate(inputs)])
    print(f"labelling: {len(inputs) / elapsed:.1f} inputs/s (n0={label['n0']}, n={label['n']})")
    return len(inputs) / elapsed


def peak_memory_mb(
    model: torch.nn.Module, sigma: float, n: int, batch_size: int, device: torch.device, options: dict,
) -> float:
    """Peak memory of one Smooth.certify with n draws beyond what was allocated before it."""
    if device.type == "cuda":
        return _peak_cuda_mb(model.to(device), sigma, n, batch_size, device, options)
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_peak_rss_mb, (model.state_dict(), sigma, n, batch_size, torch.get_num_threads()))


def _peak_cuda_mb(
    model: torch.nn.Module, sigma: float, n: int, batch_size: int, device: torch.device, options: dict,
) -> float:
    smooth = Smooth(model, 10, sigma, **options)
    x = torch.rand((1, 8, 8), device=device)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    smooth.certify(x, 100, n, 0.001, batch_size, sample_generator(0, "memory", 0, device))
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _peak_rss_mb(state: dict, sigma: float, n: int, batch_size: int, threads: int) -> float:
    """In a fresh process: peak resident set size during one certify minus the size before it (Linux)."""
    torch.set_num_threads(threads)
    model = create_model("digits_cnn", 10, 1)
    model.load_state_dict(state)
    smooth = Smooth(model.eval(), 10, sigma)
    status = Path("/proc/self/status")
    if not status.is_file():
        return math.nan
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
    before = _status_kb(status, "VmRSS")
    smooth.certify(torch.rand((1, 8, 8)), 100, n, 0.001, batch_size, sample_generator(0, "memory", 0))
    return (_status_kb(status, "VmHWM") - before) / 1024


def _status_kb(status: Path, key: str) -> int:
    line = next(line for line in status.read_text().splitlines() if line.startswith(key + ":"))
    return int(line.split()[1])


if __name__ == "__main__":
    main()
