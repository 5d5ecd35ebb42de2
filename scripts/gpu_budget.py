"""GPU memory and GPU-hours of the paper experiments at their configured sizes (config/config.yaml).

`python scripts/gpu_budget.py [--config config/config.yaml] [--experiments cifar10 imagenet] [--tflops 100]`
prints two markdown tables. Memory: per GPU job, the tensor GiB it allocates at its peak (measured on the
meta device: dualrs/memory.py), the GiB a GPU needs (allocator margin and CUDA context added) and whether that
fits a 40 GB and an 80 GB card. Compute: per stage, network evaluations, FLOPs counted per evaluation
(dualrs/compute.py) and GPU-hours at `--tflops` achieved TFLOP/s (default: an assumed rate; scripts/gpu_check.py
measures yours).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from dualrs.compute import ASSUMED_TFLOPS, experiment_compute
from dualrs.memory import GIB, configured_jobs, device_gib


def memory_table(config: dict, experiments: list[str]) -> list[str]:
    lines = ["| experiment | job | stages: batch, precision | tensors GiB | GPU GiB | fits 40 GB | fits 80 GB |",
             "|---|---|---|---|---|---|---|"]
    for name in experiments:
        for job in configured_jobs(config, name):
            tensors = job.tensor_bytes()
            need = device_gib(tensors)
            stages = "; ".join(f"{s.name} {s.batch} {s.precision}{' + checkpointing' if s.grad_checkpointing else ''}"
                               for s in job.stages)
            lines.append(f"| {name} | {job.job} | {stages} | {tensors / GIB:.1f} | {need:.1f} | "
                         f"{'yes' if need <= 40 else 'no'} | {'yes' if need <= 80 else 'no'} |")
    return lines


def compute_table(config: dict, experiments: list[str], tflops: float) -> list[str]:
    lines = [f"| experiment | stage | network evaluations | GFLOP each | GPU-hours at {tflops:g} TFLOP/s |",
             "|---|---|---|---|---|"]
    for name in experiments:
        stages = experiment_compute(config, name)
        for stage in stages:
            lines.append(f"| {name} | {stage.stage} | {stage.evaluations:,} | "
                         f"{stage.flops_per_evaluation / 1e9:,.1f} | {stage.gpu_hours(tflops):,.1f} |")
        lines.append(f"| {name} | **total** | | | **{sum(s.gpu_hours(tflops) for s in stages):,.1f}** |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("config/config.yaml"), help="pipeline config")
    parser.add_argument("--experiments", nargs="+", default=["cifar10", "imagenet"], help="experiments to size")
    parser.add_argument("--tflops", type=float, default=ASSUMED_TFLOPS,
                        help="achieved TFLOP/s of one GPU (default: %(default)s, an assumption)")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text())
    print("\n".join([*memory_table(config, args.experiments), "", *compute_table(config, args.experiments,
                                                                                    args.tflops)]))


if __name__ == "__main__":
    main()
