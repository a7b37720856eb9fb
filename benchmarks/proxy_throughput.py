"""Proxy-training throughput (images/s) of search candidates against timm's DeiT-Tiny, in one process.

Every model is trained by the same code path, ``nas.proxy.train_proxy`` with a step budget, so the
figures include augmentation, normalisation, the loss, AdamW and the schedule, i.e. what a proxy
trial pays. DeiT-Tiny (Touvron et al. 2021), the familiar baseline, runs at the proxy resolution with
patch size 4 (64 tokens at 32 px). Rounds alternate the models; the table reports medians over rounds
and ratios to DeiT-Tiny, so load from other processes affects all rows alike.

    python benchmarks/proxy_throughput.py                 # CPU (or CUDA when present), 3 rounds
    python benchmarks/proxy_throughput.py --quick         # smoke run
    python benchmarks/proxy_throughput.py --device cuda --batch-size 256
    python benchmarks/proxy_throughput.py --trial         # also: one default proxy trial of CvT-13, timed

A default trial's time depends on how many other processes share the cores: ``--trial`` prints its wall time
next to its CPU time and the load average, so a figure taken on a busy machine can be read for what it is.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
import timm
import torch

from nas.cli import ArgumentParser, run_main
from nas.cost import count_macs, count_params
from nas.data import load_dataset
from nas.proxy import ProxyConfig, proxy_model_config, train_proxy

BASELINE = "DeiT-Tiny/4 (timm)"


def _candidates(dataset: Any, proxy: ProxyConfig) -> dict[str, Callable[[], Any]]:
    """Name -> a callable giving what train_proxy takes (a config, or a fresh timm module)."""
    def deit() -> torch.nn.Module:
        torch.manual_seed(proxy.seed)
        return timm.create_model("deit_tiny_patch16_224", img_size=proxy.resolution, patch_size=4,
                                 in_chans=dataset.in_chans, num_classes=dataset.num_classes)

    return {
        "CvT-13": lambda: cvt.preset("cvt_13"),
        "CCT-7/3x1": lambda: cvt.preset("cct_7_3x1_32"),
        # Attention dropout (the authors' 0.1) keeps torch's CPU attention off its fused kernel: this row prices it.
        "CCT-7/3x1, attn drop 0": lambda: dataclasses.replace(cvt.preset("cct_7_3x1_32"), attn_drop_rate=0.0),
        "CCT-7/3x2": lambda: cvt.preset("cct_7_3x2_32"),
        BASELINE: deit,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="auto", help="dataset name (see docs/data.md); default auto")
    parser.add_argument("--data-dir", default=None, help="data root (default $CVT_NAS_DATA)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per measurement (first excluded)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all models")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 16, 4 steps, 1 round")
    parser.add_argument("--trial", action="store_true",
                        help="also time one proxy trial of CvT-13 with the default ProxyConfig (on --device)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats = 16, 4, 1

    dataset = load_dataset(args.data, args.data_dir)
    proxy = ProxyConfig(steps=args.steps, batch_size=args.batch_size, resolution=args.resolution,
                        val_subset=args.batch_size, device=args.device, threads=args.threads)
    candidates = _candidates(dataset, proxy)
    rates: dict[str, list[float]] = {name: [] for name in candidates}
    info: dict[str, tuple[int, int]] = {}
    for round_ in range(args.repeats):
        names = list(candidates)
        names = names[round_ % len(names):] + names[:round_ % len(names)]  # rotate the order every round
        for name in names:
            model = candidates[name]()
            result = train_proxy(model, dataset, proxy)
            rates[name].append(result.train_images_per_s)
            if name not in info:
                counted = model if isinstance(model, torch.nn.Module) else cvt.build_model(
                    proxy_model_config(model, proxy, in_chans=dataset.in_chans), num_classes=dataset.num_classes)
                info[name] = (count_params(counted), count_macs(counted, args.resolution))
            print(f"round {round_ + 1}: {name:<24} {result.train_images_per_s:8.1f} images/s", flush=True)

    base = statistics.median(rates[BASELINE])
    print(f"\nProxy training throughput: {dataset.name}, {args.resolution}px, batch {args.batch_size}, "
          f"{args.steps} steps (first excluded), median of {args.repeats} round(s), device {result.device}, "
          f"{result.threads} thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print("| model | params | MACs/image | train images/s | vs DeiT-Tiny |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rates.items():
        rate = statistics.median(values)
        params, macs = info[name]
        print(f"| {name} | {params / 1e6:.2f}M | {macs / 1e6:.0f}M | {rate:.1f} | {rate / base:.2f}x |")
    if args.trial:
        device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        _time_default_trial(dataset, ProxyConfig.for_device(device, threads=args.threads))
    return 0


def _time_default_trial(dataset: Any, proxy: ProxyConfig) -> None:
    """Wall and CPU time of one default proxy trial of CvT-13, with the load it ran under."""
    load_before = os.getloadavg()[0]
    cpu = time.process_time()
    result = train_proxy(cvt.preset("cvt_13"), dataset, proxy)
    cpu = time.process_time() - cpu
    print(f"\nDefault proxy trial, CvT-13 on {dataset.name} ({result.device}, {result.threads} thread(s)): "
          f"{result.wall_time_s:.1f} s wall, {cpu:.1f} s CPU, top-1 {result.accuracy:.1f}% after "
          f"{result.epochs_completed} epochs; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    sys.exit(run_main(main))
