"""Speed of cvt-nas models against the implementation people use today, in one process.

Each case pairs our model with a baseline holding the SAME weights (CvT-13: Hugging Face transformers'
``CvtForImageClassification``, converted to ours with ``cvt.load_checkpoint``; both use exact GELU).
Every round runs each contender once, in rotating order, together with a large ``torch.mm`` that gives
this machine's matrix-multiply rate at that moment; the table reports medians over the rounds, so load
from other processes hits both models alike and shows up in the ratios as noise, not bias.

Achieved rate = 2 x MACs / time (inference: the forward MACs by the paper's convention; training step:
3 x the forward MACs, forward plus backward), shown as % of the measured matmul rate.

    python benchmarks/model_speed.py                       # CPU fp32 (all cores) or CUDA bf16 autocast
    python benchmarks/model_speed.py --threads 2 --repeats 9
    python benchmarks/model_speed.py --quick               # smoke run: small batches, one round
    python benchmarks/model_speed.py --threads 1 --clock cpu   # stable on a machine shared with others
    python benchmarks/model_speed.py --models cvt_13 --compile   # adds torch.compile'd ours as a row
    python benchmarks/model_speed.py --device cuda --batches 1,64,256 --train-batch 128 --channels-last  # GPU suite

With bf16 autocast it also checks our bf16 logits against our fp32 ones on the same inputs: the largest
difference must stay within ``BF16_TOLERANCE`` of the fp32 logits' range (bf16 keeps 8 significant bits).
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence


import nas  # noqa: F401  (first of all: OpenMP's policy before torch loads, then the torchvision fix)
import cvt
import torch
import torch.nn.functional as F
from torch import nn

from nas.cli import ArgumentParser, run_main
from nas.cost import count_macs
from nas.devices import available_cpus, cpu_model

BF16_TOLERANCE = 0.02  # of the fp32 logits' range (max - min): bf16 rounding through a 13-block network


@dataclass(frozen=True)
class Case:
    """One model compared with its baseline.

    Attributes:
        name: the ``--models`` name.
        resolution: square input size.
        build: returns ``(ours, baseline, baseline_label)`` with the same weights, both in eval mode.
    """

    name: str
    resolution: int
    build: Callable[[], tuple[nn.Module, nn.Module, str]]


def _hf_cvt13() -> tuple[nn.Module, nn.Module, str]:
    from transformers import CvtConfig, CvtForImageClassification

    torch.manual_seed(0)
    hf = CvtForImageClassification(CvtConfig(num_labels=1000)).eval()
    ours = cvt.CvT(cvt.preset("cvt_13").replace(act_layer="gelu"), num_classes=1000).eval()
    cvt.load_checkpoint(ours, hf.state_dict())
    return ours, hf, "HF transformers"


class _PlainCCTLayer(nn.Module):
    """The CCT authors' encoder layer written plainly: explicit softmax attention, their key names."""

    def __init__(self, dim: int, heads: int, hidden: int, drop_path: float, attn_drop: float = 0.1):
        from timm.layers import DropPath

        super().__init__()
        self.heads = heads
        self.pre_norm = nn.LayerNorm(dim)
        self.self_attn = nn.Module()
        self.self_attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.self_attn.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.linear1, self.norm1, self.linear2 = nn.Linear(dim, hidden), nn.LayerNorm(dim), nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.self_attn.qkv(self.pre_norm(x)).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(dim=-1))
        x = x + self.drop_path(self.self_attn.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))
        x = self.norm1(x)
        return x + self.drop_path(self.linear2(F.gelu(self.linear1(x))))


class _PlainCCT(nn.Module):
    """CCT-7/3x1 as the authors structure it (conv -> ReLU -> max-pool tokenizer, SeqPool), no SDPA."""

    def __init__(self, num_classes: int, dim: int = 256, layers: int = 7, heads: int = 4, tokens: int = 256):
        super().__init__()
        self.tokenizer = nn.Module()
        self.tokenizer.conv_layers = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dim, 3, 1, 1, bias=False), nn.ReLU(), nn.MaxPool2d(3, 2, 1)))
        self.classifier = nn.Module()
        self.classifier.attention_pool = nn.Linear(dim, 1)
        self.classifier.positional_emb = nn.Parameter(torch.zeros(1, tokens, dim))
        self.classifier.blocks = nn.ModuleList(
            _PlainCCTLayer(dim, heads, 2 * dim, 0.1 * i / (layers - 1)) for i in range(layers))
        self.classifier.norm = nn.LayerNorm(dim)
        self.classifier.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.classifier
        x = self.tokenizer.conv_layers(x).flatten(2).transpose(1, 2) + head.positional_emb
        for block in head.blocks:
            x = block(x)
        x = head.norm(x)
        x = torch.matmul(F.softmax(head.attention_pool(x), dim=1).transpose(-1, -2), x).squeeze(-2)
        return head.fc(x)


def _plain_cct() -> tuple[nn.Module, nn.Module, str]:
    # 1000 classes (not CIFAR's 10) because the shared runner draws labels in [0, 1000): 0.03% more MACs.
    torch.manual_seed(0)
    ours = cvt.CCT(cvt.preset("cct_7_3x1_32"), num_classes=1000).eval()
    plain = _PlainCCT(num_classes=1000).eval()
    plain.load_state_dict(ours.state_dict(), strict=True)  # same keys and shapes: same weights
    return ours, plain, "plain reference"


# Add a case per model family and it gets a row group of its own.
CASES: dict[str, Case] = {
    "cvt_13": Case("cvt_13", 224, _hf_cvt13),
    "cct_7_3x1": Case("cct_7_3x1", 32, _plain_cct),  # CCT-7/3x1 at 32x32
}


def _logits(out) -> torch.Tensor:
    """Our models return logits; transformers returns an output object."""
    return out if isinstance(out, torch.Tensor) else out.logits


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """Times one forward (inference) or forward+backward (training) of a model."""

    def __init__(self, model: nn.Module, x: torch.Tensor, train: bool, amp_dtype: torch.dtype | None):
        self.model, self.x, self.train, self.amp_dtype = model, x, train, amp_dtype
        self.labels = torch.randint(0, 1000, (x.shape[0],), device=x.device)

    def __call__(self) -> None:
        model = self.model
        model.train(self.train)
        with torch.autocast(self.x.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            if self.train:
                model.zero_grad(set_to_none=True)
                loss = F.cross_entropy(_logits(model(self.x)).float(), self.labels)
                loss.backward()
            else:
                with torch.inference_mode():
                    model(self.x)


def _timed(fn: Callable[[], None], device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    _sync(device)
    start = clock()
    fn()
    _sync(device)
    return clock() - start


def _matmul(device: torch.device, dtype: torch.dtype) -> tuple[Callable[[], None], float]:
    """A large square matmul and its FLOP count (2 n^3)."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b)), 2.0 * n ** 3


def _max_diff(ours: nn.Module, base: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None) -> float:
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        ours.eval(), base.eval()
        return (_logits(ours(x)).float() - _logits(base(x)).float()).abs().max().item()


def _bf16_check(model: nn.Module, x: torch.Tensor) -> str:
    """Our bf16 autocast logits against our fp32 ones, within the stated tolerance or not."""
    with torch.inference_mode():
        model.eval()
        full = _logits(model(x)).float()
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            half = _logits(model(x)).float()
    diff = (half - full).abs().max().item()
    span = (full.max() - full.min()).item()
    agree = (half.argmax(1) == full.argmax(1)).float().mean().item()
    verdict = "within" if diff <= BF16_TOLERANCE * span else "OUTSIDE"
    return (f"bf16 vs fp32 (ours): max |logit difference| {diff:.3g} = {100 * diff / span:.2f}% of the logit range "
            f"({verdict} the {100 * BF16_TOLERANCE:.0f}% tolerance), top-1 agreement {100 * agree:.0f}%")


def _environment(device: torch.device, threads: int) -> list[str]:
    import timm
    import transformers

    cpu = cpu_model()
    lines = [f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
             f"transformers {transformers.__version__}",
             f"cpu: {cpu}, {os.cpu_count()} logical cores, torch threads: {threads}"]
    if device.type == "cuda":
        lines.append(f"gpu: {torch.cuda.get_device_name(device)}, cuda {torch.version.cuda}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="benchmarks/model_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cvt_13",
                        help=f"comma-separated cases ({', '.join(CASES)}); default cvt_13")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda (bf16 autocast) when present, else cpu (fp32)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per task (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="batch of the large inference and training rows")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, which time-sharing with other processes does not "
                             "inflate (meaningful with --threads 1 on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    parser.add_argument("--ablate", action="store_true",
                        help="also time ours with its fast path off (model.set_fast_path(False): plain PyTorch ops)")
    parser.add_argument("--batches", default=None, metavar="LIST",
                        help="inference batches, comma-separated (default 1,--batch)")
    parser.add_argument("--train-batch", type=int, default=None, help="training-step batch (default --batch)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last inputs and weights")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 2, one round")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        parser.error(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
    if args.repeats < 1 or args.batch < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats, --batch and --threads must be positive")
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        raise cvt.UserError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and cuda) else "cpu")
    threads = args.threads or available_cpus()
    torch.set_num_threads(threads)
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu times CPU work only; use it with --device cpu")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    batch, repeats = (2, 1) if args.quick else (args.batch, args.repeats)
    try:
        batches = [int(b) for b in (args.batches or f"1,{batch}").split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches {args.batches!r}: give comma-separated positive integers, e.g. 1,64,256")
    if args.quick:
        batches = [min(b, 2) for b in batches]
    train_batch = 2 if args.quick else (args.train_batch or batch)
    if not batches or min(batches + [train_batch]) < 1:
        parser.error("--batches and --train-batch must be positive")
    tasks = [("inference", b) for b in dict.fromkeys(batches)] + [("train step", train_batch)]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    print("\n".join(_environment(device, threads)))
    precision = "bf16 autocast" if amp_dtype else "fp32"
    layout = ", channels-last" if args.channels_last else ""
    print(f"device: {device.type}, {precision}{layout}, {repeats} rounds per task, median {args.clock} times\n")
    mm, mm_flops = _matmul(device, amp_dtype or torch.float32)

    header = (f"{'model':<10} {'task':<11} {'batch':>5} {'contender':<18} {'ms':>9} {'speedup':>8} "
              f"{'% mm':>6}")
    rows = [header, "-" * len(header)]
    mm_rates = []
    for name in names:
        case = CASES[name]
        ours, base, base_label = case.build()
        macs = count_macs(ours, case.resolution)
        ours, base = ours.to(device, memory_format=memory_format), base.to(device, memory_format=memory_format)
        contenders = [(base_label, base), ("cvt-nas", ours)]
        if args.ablate and hasattr(ours, "set_fast_path"):
            contenders.append(("cvt-nas, fast off", copy.deepcopy(ours).set_fast_path(False)))
        if args.compile:
            contenders.append(("cvt-nas compiled", torch.compile(ours)))
        probe = torch.randn(2, 3, case.resolution, case.resolution, device=device)
        diffs = [f"fp32 {_max_diff(ours, base, probe, None):.2e}"]
        if amp_dtype:
            diffs.append(f"{precision} {_max_diff(ours, base, probe, amp_dtype):.2e}")
        print(f"{name}: {macs / 1e9:.3f} GMACs at {case.resolution}, max |logit difference| vs {base_label}: "
              f"{', '.join(diffs)}")
        if amp_dtype:
            print(f"{name}: {_bf16_check(ours, torch.randn(8, 3, case.resolution, case.resolution, device=device))}")
        for task, b in tasks:
            x = torch.randn(b, 3, case.resolution, case.resolution, device=device).contiguous(
                memory_format=memory_format)
            runners = [_Runner(model, x, task != "inference", amp_dtype) for _, model in contenders]
            for run in runners:  # warm-up (allocator, compile, cudnn autotune)
                for _ in range(1 if device.type == "cpu" else 3):
                    _timed(run, device)
            times: list[list[float]] = [[] for _ in runners]
            mm_times = []
            for r in range(repeats):
                mm_times += [_timed(mm, device, clock) for _ in range(3)]
                for k in range(len(runners)):  # rotate the order so neither side always runs first
                    i = (k + r) % len(runners)
                    times[i].append(_timed(runners[i], device, clock))
            mm_rate = mm_flops / statistics.median(mm_times)
            mm_rates.append(mm_rate)
            flops = 2 * macs * b * (3 if task != "inference" else 1)
            base_time = statistics.median(times[0])
            for (label, _), ts in zip(contenders, times):
                t = statistics.median(ts)
                rows.append(f"{name:<10} {task:<11} {b:>5} {label:<18} {t * 1e3:>9.1f} {base_time / t:>7.2f}x "
                            f"{100 * flops / t / mm_rate:>5.0f}%")
        del ours, base, contenders
    print(f"\nmatmul rate ({precision}, median of 3 per round): "
          + ", ".join(f"{r / 1e9:.0f}" for r in mm_rates) + " GFLOP/s per task")
    print("speedup = baseline time / time; % mm = achieved 2 x MACs / time against that matmul rate "
          "(train step: 3 x forward MACs)\n")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
