"""GPU evidence in one prepared call: every GPU figure the project owes, from one command that fits 9 minutes.

Each part runs in a process of its own under a time box (a part that fails or runs out of time is reported
and the next one runs), its output goes into ``suite.md`` and its status into ``summary.json``:

1. ``model-speed``: CvT-13 at 224, bf16 autocast and channels-last, inference at batch 1, 64 and 256 and a
   training step at batch 128, against Hugging Face's ``CvtForImageClassification`` with the same weights, the
   share of the bf16 matmul rate measured in the same run, and our bf16 logits against our fp32 ones.
2. ``latency``: the latency protocol on the GPU (CUDA events, median and IQR) for CvT-13 and CvT-21, and a
   latency table for ``cvt13-nas`` (bf16, batch 1 and 64) with its held-out accuracy (``latency-*.json``).
3. ``proxy``: proxy-training throughput of CvT-13-sized and CCT-7 candidates against timm's DeiT-Tiny with the
   GPU defaults, and one full GPU proxy trial of CvT-13 on all 50,000 CIFAR-10 images.
4. ``search``: a short search of ``cvt13-nas`` on the GPU under a measured latency budget (80% of CvT-13's),
   with its front (``pareto.csv``) and best export.
5. ``oracle``: the ranking oracle's GPU edition at 4 GFLOPs (``nas.ranking.GPU_RECIPE``: all 50,000 images, 3
   epochs, bf16), four shard processes sharing the GPU, stopped before the time box ends and merged into
   ``oracle-gpu-4gflops.json``; it resumes from ``experiments/results/ranking-oracle/cvt-4gflops-gpu.json`` (commit
   what comes back there), so it grows across calls. After parts 1-4 little time is left: give it a call of its
   own, ``--parts oracle``.
6. ``supernet``: a weight-sharing supernet trained with ``nas.supernet.GPU_RECIPE`` over the CPU oracle's space
   (half to all of 4 GFLOPs), its inherited accuracy against the CPU oracle's band, members scored per second, and
   one fine-tuning from inherited weights against one from scratch (``supernet-gpu.json``). Its own call too:
   ``--parts supernet``.

On the GPU machine (Python 3.12, its own CUDA torch): first, here, ``bash benchmarks/gpu_wheels.sh`` (wheels of
what that machine lacks and the CIFAR-10 archive, into the git-ignored ``.gpu/``); then one device call that
carries ``.gpu``::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl && \\
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --out $OUT

and commit what comes back under ``experiments/results/gpu/<device>-<date>/``. ``--smoke`` runs every part on
the CPU at toy sizes (the tests do), so the suite never rots; the checks that need a GPU are skipped there with
the reason. ``--parts`` runs some parts only.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / ".gpu"  # what benchmarks/gpu_wheels.sh fetched: wheels/ and data/
BUDGET_S = 540  # the whole suite: 9 minutes of a 10-minute device command
PREVIOUS_ORACLE = ROOT / "experiments" / "results" / "ranking-oracle" / "cvt-4gflops-gpu.json"  # resumed from


@dataclass(frozen=True)
class Part:
    """One part: its share of the time box, and what it needs (modules, CIFAR-10) to run at all."""

    name: str
    title: str
    seconds: int  # its time box on the GPU (the smoke run gives each the same)
    run: Callable[["Context"], None]
    needs: tuple[str, ...] = ()  # importable modules
    needs_cifar: bool = False


@dataclass(frozen=True)
class Context:
    """What a part's process is told: where outputs go, whether this is the CPU smoke run, the data, its time."""

    out: Path
    smoke: bool
    data_dir: str | None
    seconds: float = 60.0  # its time box (a part that starts processes of its own stops them in time)

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"


def _script(name: str) -> Callable[[Sequence[str]], int]:
    """``benchmarks/<name>.py``'s ``main`` (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.main


def _check(code: int, what: str) -> None:
    if code != 0:
        raise RuntimeError(f"{what} exited with {code}")


# ---------------------------------------------------------------------------- the parts
def model_speed(ctx: Context) -> None:
    args = ["--models", "cvt_13", "--device", ctx.device, "--channels-last"]
    args += ["--quick", "--threads", "1"] if ctx.smoke else ["--batches", "1,64,256", "--train-batch", "128",
                                                              "--repeats", "5"]
    if ctx.smoke:
        print("(smoke run on the CPU: fp32, batch 2; the bf16 check and the GPU rates need the GPU)")
    _check(_script("model_speed")(args), "model_speed.py")


def latency(ctx: Context) -> None:
    from nas.latency import main as latency_main

    dtype = "fp32" if ctx.smoke else "bf16"
    common = ["--device", ctx.device, "--dtype", dtype, "--channels-last"] if not ctx.smoke else \
        ["--device", "cpu", "--threads", "1"]
    repeats = ["--warmup", "1", "--repeats", "3"] if ctx.smoke else ["--warmup", "20", "--repeats", "100"]
    for preset in ("cvt_13", "cvt_21"):
        for batch in ((1,) if ctx.smoke else (1, 64)):
            print(f"\n$ latency of {preset}, batch {batch}, {dtype}")
            _check(latency_main(["measure", "--preset", preset, "--batch-size", str(batch), "--no-cache",
                                 *repeats, *common]), "nas.latency measure")
    sizes = ["--fit", "2", "--holdout", "2", "--warmup", "1", "--repeats", "2", "--model-warmup", "1",
             "--model-repeats", "2", "--resolution", "64"] if ctx.smoke else ["--fit", "30", "--holdout", "30"]
    for batch in ((1,) if ctx.smoke else (1, 64)):
        print(f"\n$ latency table of cvt13-nas, batch {batch}, {dtype}")
        _check(latency_main(["build", "--space", "cvt13-nas", "--batch-size", str(batch), *sizes, *common,
                             "--out", str(ctx.out / f"latency-{ctx.device}-{dtype}-b{batch}.json")]),
               "nas.latency build")


def proxy(ctx: Context) -> None:
    args = ["--device", ctx.device]
    if ctx.smoke:
        args += ["--quick", "--data", "synthetic", "--threads", "1"]
        print("(smoke run on the CPU: the full proxy trial on CIFAR-10 needs the GPU)")
    else:
        args += ["--data", "cifar10", "--batch-size", "256", "--trial"]
    if ctx.data_dir:
        args += ["--data-dir", ctx.data_dir]
    _check(_script("proxy_throughput")(args), "proxy_throughput.py")


def search(ctx: Context) -> None:
    from nas.cost import measure_latency
    from nas.search import main as search_main

    import cvt

    space, data = ("cvt13-nas", "cifar10") if not ctx.smoke else (str(ROOT / "tests/data/tiny-cvt-space.yaml"),
                                                                   "synthetic")
    reference = cvt.preset("cvt_13") if not ctx.smoke else cvt.preset("cvt_13").replace(img_size=64)
    dtype = "bf16" if not ctx.smoke else "fp32"
    measured = measure_latency(reference, device=ctx.device, dtype=dtype, batch_size=1, use_cache=False,
                               **({"threads": 1, "warmup": 1, "repeats": 3} if ctx.smoke else {}))
    budget = 0.8 * measured.median_ms
    print(f"CvT-13: {measured.median_ms:.3f} ms ({dtype}, batch 1, {measured.device_name}); budget 80%: "
          f"{budget:.3f} ms")
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-suite-search-"))
    args = ["--space", space, "--latency-budget", f"{budget:.4f}ms", "--device", ctx.device, "--dtype", dtype,
            "--objectives", "accuracy,latency,macs", "--data", data, "--out", str(run_dir), "--rungs", "1,2",
            "--self-check", "0"]
    args += ["--trials", "2", "--proxy-epochs", "1", "--proxy-train-subset", "64", "--proxy-val-subset", "32",
             "--threads", "1", "--latency-threads", "1", "--budget", "4.5MFLOPs"] if ctx.smoke else \
        ["--trials", "8", "--train-device", "cuda", "--proxy-epochs", "2", "--proxy-train-subset", "10000",
         "--proxy-val-subset", "2000"]
    if ctx.data_dir:
        args += ["--data-dir", ctx.data_dir]
    try:
        _check(search_main(args), "nas.search")
    finally:
        for name in ("pareto.csv", "trials.csv"):
            if (run_dir / name).exists():
                shutil.copy(run_dir / name, ctx.out / f"search-{name}")
        best = sorted((run_dir / "exports" / "best").glob("*.yaml"))
        if best:
            shutil.copy(best[0], ctx.out / "search-best.yaml")


def oracle(ctx: Context) -> None:
    """The ranking oracle's GPU edition: shard processes sharing the GPU, stopped before the part's time is up
    (their results so far kept: the oracle resumes), then merged into one file."""
    shards = 2 if ctx.smoke else 4
    work = Path(tempfile.mkdtemp(prefix="gpu-suite-oracle-"))
    common = [sys.executable, str(ROOT / "benchmarks" / "ranking_oracle.py"), "--recipe", "gpu"]
    common += ["--quick", "--data", "synthetic", "--threads", "1"] if ctx.smoke else \
        ["--data", "cifar10", "--device", "cuda", "--threads", "2"]
    if ctx.data_dir:
        common += ["--data-dir", ctx.data_dir]
    earlier = [str(PREVIOUS_ORACLE)] if PREVIOUS_ORACLE.is_file() and not ctx.smoke else []
    if earlier:
        common += ["--merge", *earlier]
    procs = [subprocess.Popen(common + ["--shard", f"{k}/{shards}", "--out", str(work / f"oracle-{k}.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(shards)]
    deadline = time.monotonic() + max(10.0, ctx.seconds - 30)  # leave time to merge and report
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            print(f"shard process {p.pid} stopped at the time box; its finished trainings are kept")
    merged = ctx.out / "oracle-gpu-4gflops.json"
    parts = [str(p) for p in sorted(work.glob("oracle-*.json"))]
    if not parts:
        raise RuntimeError("no shard finished a training; " + (procs[0].stderr.read() if procs[0].stderr else ""))
    merge = subprocess.run([a for a in common if a not in ("--merge", *earlier)] + ["--merge", *earlier, *parts,
                                                                                   "--out", str(merged), "--report"],
                           capture_output=True, text=True)
    print(merge.stdout)
    _check(merge.returncode, f"ranking_oracle.py --merge ({merge.stderr.strip()[-300:]})")


def supernet(ctx: Context) -> None:
    """The supernet's GPU recipe scored against the CPU oracle's band (same CIFAR-10 members): training time,
    inherited-accuracy fidelity, members scored per second, and one fine-tuning from inherited weights against
    one from scratch. The smoke run builds a toy oracle on synthetic data first."""
    scores = Path(tempfile.mkdtemp(prefix="gpu-suite-supernet-")) / "supernet-gpu.json"
    if ctx.smoke:
        oracle_file = scores.parent / "oracle.json"
        _check(_script("ranking_oracle")(["--quick", "--data", "synthetic", "--threads", "1", "--out",
                                          str(oracle_file)]), "ranking_oracle.py")
        args = ["--oracle", str(oracle_file), "--quick", "--data", "synthetic", "--threads", "1", "--throughput", "3"]
    else:
        results = ROOT / "experiments" / "results" / "ranking-oracle"
        args = ["--oracle", str(results / "cvt-4gflops.json"), "--recipe", "gpu", "--data", "cifar10",
                "--estimates", str(results / "estimates-cvt-4gflops.json"), "--throughput", "300"]
    if ctx.data_dir:
        args += ["--data-dir", ctx.data_dir]
    try:
        _check(_script("supernet_fidelity")(args + ["--device", ctx.device, "--finetune", "1" if ctx.smoke else "2",
                                                    "--out", str(scores)]), "supernet_fidelity.py")
    finally:  # one file back: the scores and the costs side by side
        parts = {"scores": scores, "costs": scores.with_name(scores.stem + "-costs.json")}
        found = {key: json.loads(path.read_text()) for key, path in parts.items() if path.exists()}
        if found:
            (ctx.out / scores.name).write_text(json.dumps(found, indent=1))


PARTS: dict[str, Part] = {p.name: p for p in (
    Part("model-speed", "CvT-13 bf16 speed against Hugging Face", 150, model_speed, ("transformers", "fvcore")),
    Part("latency", "latency protocol and table on the GPU", 150, latency, ("fvcore",)),
    Part("proxy", "proxy-training throughput and one GPU proxy trial", 110, proxy, ("fvcore",), needs_cifar=True),
    Part("search", "a search under a measured GPU latency budget", 120, search, ("optuna",), needs_cifar=True),
    Part("oracle", "the ranking oracle's GPU edition (4 processes on the GPU, resumable)", 510, oracle,
         needs_cifar=True),
    Part("supernet", "the supernet's GPU recipe against the oracle (give it its own call)", 510, supernet,
         needs_cifar=True),
)}


# ---------------------------------------------------------------------------- the runner
def _missing(part: Part) -> str | None:
    import importlib.util

    absent = [m for m in part.needs if importlib.util.find_spec(m) is None]
    if absent:
        return (f"missing Python package(s) {', '.join(absent)}: run `bash benchmarks/gpu_wheels.sh` here and carry "
                f".gpu (see this script's docstring)")
    return None


def _prepare_cifar(smoke: bool) -> tuple[str | None, str | None]:
    """(data root holding cifar-10-batches-py, reason it is missing): built from the carried archive if needed."""
    if smoke:
        return None, None
    root = Path(os.environ.get("CVT_NAS_DATA") or Path.home() / ".cache" / "cvt-nas" / "data")
    if (root / "cifar-10-batches-py" / "test_batch").is_file():
        return str(root), None
    archive = CARRIED / "data" / "build.py"
    if not archive.is_file():
        return None, ("CIFAR-10 is missing: run `bash benchmarks/gpu_wheels.sh` here (it copies the archive from "
                      "../shared/data into .gpu/data) and carry .gpu")
    root = Path(tempfile.gettempdir()) / "cvt-nas-data"
    subprocess.run([sys.executable, str(archive), "--out", str(root / "cifar-10-batches-py")], check=True,
                   stdout=subprocess.DEVNULL)
    return str(root), None


def run_part(name: str, out: Path, smoke: bool, data_dir: str | None, seconds: float) -> int:
    """In the part's own process: run it."""
    import nas  # noqa: F401  (torchvision fix before timm)

    PARTS[name].run(Context(out, smoke, data_dir, seconds))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from cvt import UserError
    from nas.cli import ArgumentParser

    parser = ArgumentParser(prog="benchmarks/gpu_suite.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for suite.md, summary.json and part files")
    parser.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (the tests)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {', '.join(PARTS)}")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for the whole suite ({BUDGET_S})")
    parser.add_argument("--run-part", default=None, help="(internal) run one part in this process")
    parser.add_argument("--data-dir", default=None, help="(internal) the prepared data root")
    parser.add_argument("--part-seconds", type=float, default=60.0, help="(internal) the part's time box")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.run_part:
        return run_part(args.run_part, args.out, args.smoke, args.data_dir, args.part_seconds)
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARTS]
    if unknown or not names:
        raise UserError(f"--parts {args.parts}: unknown part(s) {', '.join(unknown) or '(none)'}; "
                        f"use any of {', '.join(PARTS)}")
    gpu = _gpu_name()
    if not args.smoke and gpu is None:
        raise UserError("no CUDA device is visible to torch: run this on the GPU machine (see the docstring), "
                        "or use --smoke to run every part on the CPU at toy sizes")
    data_dir, data_missing = _prepare_cifar(args.smoke) if any(PARTS[n].needs_cifar for n in names) else (None, None)
    deadline = time.monotonic() + args.budget
    results, sections = [], []
    for name in names:
        part = PARTS[name]
        reason = _missing(part) or (data_missing if part.needs_cifar else None)
        left = deadline - time.monotonic()
        seconds = min(part.seconds, left) if not args.smoke else max(left, 1)
        if reason is None and left < 60:
            reason = f"no time left in the suite's budget: run `--parts {name}` in a device call of its own"
        status, output, wall = "skipped", "", 0.0
        if reason is None:
            start = time.monotonic()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(args.out), "--run-part", name,
                   "--part-seconds", f"{seconds:.0f}", *(["--smoke"] if args.smoke else []),
                   *(["--data-dir", data_dir] if data_dir else [])]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, seconds), env=env)
                output = done.stdout + (("\n" + done.stderr) if done.returncode else "")
                status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
            except subprocess.TimeoutExpired as err:
                status = f"timed out after {seconds:.0f} s"
                output = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            wall = time.monotonic() - start
        results.append({"part": name, "title": part.title, "status": status, "reason": reason,
                        "seconds": round(wall, 1)})
        print(f"{name}: {status}{f' ({reason})' if reason else ''}, {wall:.0f} s", flush=True)
        sections.append(f"## {name}: {part.title}\n\n{status}{f': {reason}' if reason else ''}, {wall:.0f} s\n\n"
                        + (f"```\n{output.strip()}\n```\n" if output.strip() else ""))
    header = _environment(gpu, args.smoke)
    (args.out / "suite.md").write_text(f"# GPU suite{' (smoke run on the CPU)' if args.smoke else ''}\n\n"
                                       + "\n".join(f"- {line}" for line in header) + "\n\n" + "\n".join(sections))
    (args.out / "summary.json").write_text(json.dumps({"environment": header, "smoke": args.smoke,
                                                       "parts": results}, indent=1) + "\n")
    failed = [r["part"] for r in results if r["status"] not in ("ok", "skipped")]
    return 1 if failed else 0


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _environment(gpu: str | None, smoke: bool) -> list[str]:
    import torch

    lines = [f"date {time.strftime('%Y-%m-%d %H:%M %Z')}", f"python {platform.python_version()}, torch "
             f"{torch.__version__} (cuda {torch.version.cuda})", f"gpu: {gpu or 'none'}"]
    from nas.devices import cpu_model

    lines.append(f"cpu: {cpu_model()}, {os.cpu_count()} logical cores" + (" (smoke run: toy sizes)" if smoke else ""))
    return lines


if __name__ == "__main__":
    from nas.cli import run_main

    sys.exit(run_main(main))
