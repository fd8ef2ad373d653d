"""Benchmark: eager PyTorch vs torch.compile vs vae_ext vs a plain copy (design.md section 6).

``python -m vae_ext bench [--sizes quick|full|gpu|BxD,...] [--device cpu|cuda] [--json PATH] ...``

Every row is timed in the same run: the same op written in eager PyTorch, ``torch.compile`` of
that eager function, the vae_ext op, and ``y.copy_(x)`` on as many elements. GB/s comes from
model bytes (N-sized tensors read + written, see ``tensor_passes``) over the median time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import vae_ext

SIZE_SETS = {
    "quick": ((128, 32), (4096, 256)),
    "full": ((128, 32), (4096, 256), (16384, 1024)),
    "gpu": ((256, 64), (4096, 512), (65536, 1024), (64, 16, 64, 64)),
}
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
IMPLS = ("eager", "compile", "vae_ext", "copy")
KERNEL_IMPLS = ("eager", "compile", "vae_ext")
OPS = ("reparameterize_kl", "reparameterize", "gaussian_kl")
PASSES = ("fwd", "bwd", "fwd+bwd")
EPS_MODES = ("sampled", "given")
NO_EPS = "none"  # eps mode of gaussian_kl, which draws no noise
OUTPUTS = {"reparameterize_kl": ("z", "kl"), "reparameterize": ("z",), "gaussian_kl": ("kl",)}

# N-sized tensors read + written per pass with eps sampled in the kernel; a given eps adds one read.
#   reparameterize_kl  fwd: mu, logvar -> z           bwd: grad_z, mu, logvar -> grad_mu, grad_logvar
#   reparameterize     fwd: mu, logvar -> z           bwd: grad_z, logvar -> grad_logvar (grad_mu is grad_z)
#   gaussian_kl        fwd: mu, logvar -> kl [B]      bwd: mu, logvar -> grad_mu, grad_logvar
# [B]-sized tensors (kl, grad_kl) are not counted.
_TENSOR_PASSES = {
    "reparameterize_kl": {"fwd": 3, "bwd": 5},
    "reparameterize": {"fwd": 3, "bwd": 3},
    "gaussian_kl": {"fwd": 2, "bwd": 4},
    "copy": {"fwd": 2},
}
_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- byte model


def tensor_passes(op: str, pass_name: str, eps: str) -> int:
    """How many N-sized tensors one call reads or writes (the copy row uses op "copy")."""
    extra = 1 if eps == "given" else 0
    return sum(_TENSOR_PASSES[op][part] + extra for part in pass_name.split("+"))


def model_bytes(op: str, pass_name: str, eps: str, numel: int, itemsize: int) -> int:
    return tensor_passes(op, pass_name, eps) * numel * itemsize


# --------------------------------------------------------------------------- implementations
# Each takes (mu, logvar, eps-or-None) and returns a tuple of outputs named by OUTPUTS[op].


def _latent_dims(mu):
    return tuple(range(1, mu.dim()))


def eager_reparameterize_kl(mu, logvar, eps=None):
    if eps is None:
        eps = torch.randn_like(mu)
    z = mu + eps * torch.exp(0.5 * logvar)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=_latent_dims(mu))
    return z, kl


def eager_reparameterize(mu, logvar, eps=None):
    if eps is None:
        eps = torch.randn_like(mu)
    return (mu + eps * torch.exp(0.5 * logvar),)


def eager_gaussian_kl(mu, logvar, eps=None):
    return (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=_latent_dims(mu)),)


def vae_ext_reparameterize_kl(mu, logvar, eps=None):
    return vae_ext.reparameterize_kl(mu, logvar, eps, reduction="none")


def vae_ext_reparameterize(mu, logvar, eps=None):
    return (vae_ext.reparameterize(mu, logvar, eps),)


def vae_ext_gaussian_kl(mu, logvar, eps=None):
    return (vae_ext.gaussian_kl(mu, logvar, reduction="none"),)


EAGER = {
    "reparameterize_kl": eager_reparameterize_kl,
    "reparameterize": eager_reparameterize,
    "gaussian_kl": eager_gaussian_kl,
}
VAE_EXT = {
    "reparameterize_kl": vae_ext_reparameterize_kl,
    "reparameterize": vae_ext_reparameterize,
    "gaussian_kl": vae_ext_gaussian_kl,
}


class CompiledFunctions:
    """torch.compile of the eager functions, one per (op, eps mode, training or inference)."""

    def __init__(self):
        self._functions = {}

    def get(self, op, eps, training):
        key = (op, eps, training)
        if key not in self._functions:
            self._functions[key] = torch.compile(EAGER[op], dynamic=False)
        return self._functions[key]


def _raised_recompile_limit():
    """Every (dtype, shape, eps, grad mode) is its own graph of the same code object: allow them all."""
    import torch._dynamo

    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{name: max(getattr(config, name), 256)})


# --------------------------------------------------------------------------- cases and inputs


@dataclass(frozen=True)
class Case:
    op: str
    pass_name: str
    eps: str
    dtype: torch.dtype
    shape: tuple

    @property
    def training(self):
        return self.pass_name != "fwd"

    def describe(self):
        return f"{self.op} {self.pass_name} eps={self.eps} {dtype_name(self.dtype)} {shape_text(self.shape)}"


@dataclass
class Inputs:
    mu: torch.Tensor
    logvar: torch.Tensor
    eps: torch.Tensor
    grad_z: torch.Tensor
    grad_kl: torch.Tensor


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def shape_text(shape):
    return "x".join(str(s) for s in shape)


def make_inputs(shape, dtype, device, seed=0):
    """Fixed random inputs and output gradients, shared by every impl of a (dtype, shape)."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def randn(size, dt=dtype):
        return torch.randn(size, generator=generator, device=device, dtype=dt)

    return Inputs(
        mu=randn(shape),
        logvar=randn(shape).mul_(0.5),
        eps=randn(shape),
        grad_z=randn(shape),
        grad_kl=randn(shape[:1], torch.float32),
    )


def make_cases(config, dtype, shape):
    cases = []
    for op in config.ops:
        eps_modes = (NO_EPS,) if op == "gaussian_kl" else config.eps_modes
        for eps in eps_modes:
            cases += [Case(op, pass_name, eps, dtype, shape) for pass_name in config.passes]
    return cases


def build_step(fn, case, data):
    """A no-argument callable running one timed call of ``case`` (its graph built here for "bwd")."""
    eps = data.eps if case.eps == "given" else None
    if not case.training:
        return lambda: fn(data.mu, data.logvar, eps)
    mu = data.mu.detach().requires_grad_()
    logvar = data.logvar.detach().requires_grad_()
    outputs = fn(mu, logvar, eps)
    grads = tuple(_output_grad(name, out, data) for name, out in zip(OUTPUTS[case.op], outputs))
    if case.pass_name == "bwd":
        return lambda: torch.autograd.grad(outputs, (mu, logvar), grads, retain_graph=True)
    return lambda: torch.autograd.grad(fn(mu, logvar, eps), (mu, logvar), grads)


def _output_grad(name, output, data):
    grad = data.grad_z if name == "z" else data.grad_kl
    return grad.to(output.dtype)


def build_copy_step(data):
    source = data.grad_z
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


# --------------------------------------------------------------------------- timing


class CpuTimer:
    method = "time.perf_counter per call"

    def sync(self):
        pass

    def sample(self, step, repetitions):
        times = []
        for _ in range(repetitions):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        return times


class CudaTimer:
    method = "CUDA events per call"

    def sync(self):
        torch.cuda.synchronize()

    def sample(self, step, repetitions):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
        for start, end in zip(starts, ends):
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) * 1e-3 for start, end in zip(starts, ends)]


@dataclass
class TimingSettings:
    warmup: int
    min_repeats: int
    max_repeats: int
    min_time: float

    def repetitions(self, seconds_per_call):
        wanted = math.ceil(self.min_time / max(seconds_per_call, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, wanted))


@dataclass
class Timing:
    times: list
    first_call_s: float


def measure(step, timer, settings, setup_s=0.0):
    """One untimed first call (compiles), warm-up calls that size the run, then timed calls."""
    start = time.perf_counter()
    step()
    timer.sync()
    first_call_s = setup_s + time.perf_counter() - start
    warmup_times = timer.sample(step, settings.warmup) if settings.warmup else [first_call_s]
    per_call = statistics.median(warmup_times)
    return Timing(timer.sample(step, settings.repetitions(per_call)), first_call_s)


# --------------------------------------------------------------------------- rows


def _base_row(impl, op, pass_name, eps, dtype, shape):
    return {"impl": impl, "op": op, "pass": pass_name, "eps": eps, "dtype": dtype_name(dtype), "shape": list(shape)}


def timing_row(impl, op, pass_name, eps, dtype, shape, timing):
    row = _base_row(impl, op, pass_name, eps, dtype, shape)
    median_s = statistics.median(timing.times)
    nbytes = model_bytes(op, pass_name, eps, math.prod(shape), dtype.itemsize)
    quartiles = statistics.quantiles(timing.times, n=4) if len(timing.times) > 1 else [median_s] * 3
    row.update(
        median_ms=median_s * 1e3,
        gbps=nbytes / median_s / 1e9,
        bytes=nbytes,
        min_ms=min(timing.times) * 1e3,
        iqr_ms=(quartiles[2] - quartiles[0]) * 1e3,
        repetitions=len(timing.times),
        first_call_ms=timing.first_call_s * 1e3,
    )
    return row


def error_row(impl, op, pass_name, eps, dtype, shape, error):
    row = _base_row(impl, op, pass_name, eps, dtype, shape)
    message = f"{type(error).__name__}: {error}".strip()
    row.update(median_ms=None, gbps=None, error=message[:2000])
    return row


def _case_key(row):
    return (row["op"], row["pass"], row["eps"], row["dtype"], tuple(row["shape"]))


def _ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def add_derived_fields(results):
    """frac_of_copy and speedups vs eager / compile, from median_ms and gbps only."""
    copy_gbps = {(r["dtype"], tuple(r["shape"])): r["gbps"] for r in results if r["impl"] == "copy"}
    median_ms = {(r["impl"],) + _case_key(r): r["median_ms"] for r in results}
    for row in results:
        if row["impl"] == "copy":
            continue
        key = _case_key(row)
        row["frac_of_copy"] = _ratio(row["gbps"], copy_gbps.get((row["dtype"], tuple(row["shape"]))))
        row["speedup_vs_eager"] = _ratio(median_ms.get(("eager",) + key), row["median_ms"])
        row["speedup_vs_compile"] = _ratio(median_ms.get(("compile",) + key), row["median_ms"])
    return results


# --------------------------------------------------------------------------- the run


@dataclass
class Config:
    device: str
    shapes: tuple
    dtypes: tuple
    impls: tuple
    ops: tuple
    passes: tuple
    eps_modes: tuple
    threads: int
    timing: TimingSettings
    quiet: bool


class Runner:
    def __init__(self, config):
        self.config = config
        self.timer = CudaTimer() if config.device == "cuda" else CpuTimer()
        self.compiled = CompiledFunctions() if "compile" in config.impls else None
        self.kernel_impls = [impl for impl in KERNEL_IMPLS if impl in config.impls]
        self.done = 0
        self.total = self._count()

    def _count(self):
        per_shape = len(make_cases(self.config, None, None)) * len(self.kernel_impls) + ("copy" in self.config.impls)
        return per_shape * len(self.config.shapes) * len(self.config.dtypes)

    def run(self):
        results = []
        for dtype in self.config.dtypes:
            for shape in self.config.shapes:
                results += self._run_shape(dtype, shape)
        return add_derived_fields(results)

    def _run_shape(self, dtype, shape):
        data = make_inputs(shape, dtype, self.config.device)
        rows = [self._measure_copy(data, dtype, shape)] if "copy" in self.config.impls else []
        for case in make_cases(self.config, dtype, shape):
            rows += [self._measure_impl(impl, case, data) for impl in self.kernel_impls]
        del data
        if self.config.device == "cuda":
            torch.cuda.empty_cache()
        return rows

    def _function(self, impl, case):
        if impl == "compile":
            return self.compiled.get(case.op, case.eps, case.training)
        return EAGER[case.op] if impl == "eager" else VAE_EXT[case.op]

    def _measure_impl(self, impl, case, data):
        labels = (impl, case.op, case.pass_name, case.eps, case.dtype, case.shape)
        try:
            with torch.set_grad_enabled(case.training):
                start = time.perf_counter()
                step = build_step(self._function(impl, case), case, data)
                timing = measure(step, self.timer, self.config.timing, time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001  a failing impl (typically torch.compile) is recorded
            return self._report(error_row(*labels, error), case.describe())
        return self._report(timing_row(*labels, timing), case.describe())

    def _measure_copy(self, data, dtype, shape):
        labels = ("copy", "copy", "fwd", NO_EPS, dtype, shape)
        description = f"copy {dtype_name(dtype)} {shape_text(shape)}"
        try:
            timing = measure(build_copy_step(data), self.timer, self.config.timing)
        except Exception as error:  # noqa: BLE001
            return self._report(error_row(*labels, error), description)
        return self._report(timing_row(*labels, timing), description)

    def _report(self, row, description):
        self.done += 1
        if "error" in row:
            print(f"[{self.done}/{self.total}] {row['impl']} {description}: ERROR {row['error']}", file=sys.stderr)
        elif not self.config.quiet:
            print(
                f"[{self.done}/{self.total}] {row['impl']:8s} {description}: "
                f"{row['median_ms']:.4g} ms, {row['gbps']:.3g} GB/s",
                file=sys.stderr,
            )
        return row


def run_benchmark(config):
    """Runs every selected row and returns the result document (design.md section 6 shape)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        runner = Runner(config)
        if runner.compiled is None:
            results = runner.run()
        else:
            with _raised_recompile_limit():
                results = runner.run()
    finally:
        torch.set_num_threads(previous_threads)
    return make_report(config, results)


# --------------------------------------------------------------------------- environment


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_string(device, threads):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu: {cpu_model()}, {threads} threads"


def _git(*args):
    result = subprocess.run(["git", "-C", str(_ROOT), *args], check=False, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise OSError(result.stderr.strip())
    return result.stdout.strip()


def git_state():
    """(commit sha, tree has uncommitted changes) of the repo holding this package, or ("unknown", None)."""
    try:
        if Path(_git("rev-parse", "--show-toplevel")).resolve() != _ROOT:
            return "unknown", None
        return _git("rev-parse", "HEAD"), bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def make_report(config, results):
    commit, dirty = git_state()
    report = {
        "device": device_string(config.device, config.threads),
        "torch": torch.__version__,
        "vae_ext": vae_ext.__version__,
        "commit": commit,
        "results": results,
        "dirty": dirty,
        "device_type": config.device,
        "threads": config.threads if config.device == "cpu" else None,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "build_info": vae_ext.build_info(),
        "timing": {
            "method": (CudaTimer if config.device == "cuda" else CpuTimer).method,
            "statistic": "median",
            "warmup": config.timing.warmup,
            "min_repeats": config.timing.min_repeats,
            "max_repeats": config.timing.max_repeats,
            "min_time_s": config.timing.min_time,
        },
        "bytes_model": {op: passes for op, passes in _TENSOR_PASSES.items()},
    }
    if config.device == "cuda":
        report["cuda"] = torch.version.cuda
        report["capability"] = list(torch.cuda.get_device_capability())
    return report


def save_path(report):
    slug = re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-")
    results_dir = (_ROOT if report["commit"] != "unknown" else Path.cwd()) / "benchmarks" / "results"
    dirty = "-dirty" if report.get("dirty") else ""
    return results_dir / f"{slug}-{report['commit'][:7]}{dirty}.json"


# --------------------------------------------------------------------------- tables


def _fmt(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table_cells(results):
    """Header and one row of cells per (op, pass, eps, dtype, shape)."""
    impls = [impl for impl in KERNEL_IMPLS if any(r["impl"] == impl for r in results)]
    has_copy = any(r["impl"] == "copy" for r in results)
    header = ["op", "pass", "eps", "dtype", "shape"]
    for impl in impls:
        header += [f"{impl} ms", f"{impl} GB/s"]
    extras = [
        ("copy GB/s", has_copy),
        ("vae_ext/copy", has_copy and "vae_ext" in impls),
        ("vs eager", "eager" in impls and "vae_ext" in impls),
        ("vs compile", "compile" in impls and "vae_ext" in impls),
    ]
    header += [name for name, shown in extras if shown]
    by_key = {}
    for row in results:
        if row["impl"] != "copy":
            by_key.setdefault(_case_key(row), {})[row["impl"]] = row
    copy_gbps = {(r["dtype"], tuple(r["shape"])): r["gbps"] for r in results if r["impl"] == "copy"}
    lines = [_cells(key, by_key[key], impls, copy_gbps, extras) for key in by_key]
    return header, lines


def _cells(key, rows, impls, copy_gbps, extras):
    op, pass_name, eps, dtype, shape = key
    cells = [op, pass_name, eps, dtype, shape_text(shape)]
    for impl in impls:
        row = rows.get(impl)
        if row is not None and row.get("error"):
            cells += ["error", "error"]
        else:
            cells += [_fmt(row and row["median_ms"], ".4g"), _fmt(row and row["gbps"], ".3g")]
    ours = rows.get("vae_ext") or {}
    copy = copy_gbps.get((dtype, shape))
    values = {
        "copy GB/s": _fmt(copy, ".3g"),
        "vae_ext/copy": _fmt(_ratio(ours.get("gbps"), copy), ".2f"),
        "vs eager": _fmt(_ratio((rows.get("eager") or {}).get("median_ms"), ours.get("median_ms")), ".2f", "x"),
        "vs compile": _fmt(_ratio((rows.get("compile") or {}).get("median_ms"), ours.get("median_ms")), ".2f", "x"),
    }
    return cells + [values[name] for name, shown in extras if shown]


def _summary_lines(report):
    info = report.get("build_info") or {}
    backend = f" ({info['backend']})" if "backend" in info else ""
    return [
        f"device: {report['device']}",
        f"torch {report['torch']}, vae_ext {report['vae_ext']}{backend}, commit {report['commit'][:12]}"
        + (" (uncommitted changes)" if report.get("dirty") else ""),
        (
            "GB/s = model bytes / median time; vae_ext/copy = vae_ext GB/s over copy GB/s;"
            " vs eager / vs compile = their median ms over vae_ext's"
        ),
    ]


def render_text(report):
    header, lines = table_cells(report["results"])
    numeric = [i >= 5 for i in range(len(header))]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]

    def line(cells):
        return "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in zip(cells, widths, numeric))

    body = [line(header), line(["-" * w for w in widths])] + [line(cells) for cells in lines]
    return "\n".join(_summary_lines(report) + [""] + body)


def render_markdown(report):
    header, lines = table_cells(report["results"])
    align = ["---" if i < 5 else "---:" for i in range(len(header))]
    rows = [header, align] + lines
    table = ["| " + " | ".join(cells) + " |" for cells in rows]
    summary = [text + "  " for text in _summary_lines(report)]
    return "\n".join(summary + [""] + table)


def errors_of(report, impls=("eager", "vae_ext", "copy")):
    return [r for r in report["results"] if r.get("error") and r["impl"] in impls]


# --------------------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m vae_ext bench",
        description="Time eager PyTorch, torch.compile and vae_ext against a device copy (design.md section 6).",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--sizes", default="quick", help="quick, full, gpu, or shapes like 128x32,64x16x64x64 (default quick)"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma list of " + ", ".join(DTYPES))
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of " + ", ".join(IMPLS))
    parser.add_argument("--ops", default="reparameterize_kl", help="comma list of " + ", ".join(OPS) + ", or all")
    parser.add_argument("--passes", default=",".join(PASSES), help="comma list of " + ", ".join(PASSES))
    parser.add_argument("--eps", default=",".join(EPS_MODES), help="comma list of " + ", ".join(EPS_MODES))
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default torch.get_num_threads())")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls after the first (default 5)")
    parser.add_argument("--repeats", type=int, default=10, help="fewest timed calls (default 10)")
    parser.add_argument("--max-repeats", type=int, default=1000, help="most timed calls (default 1000)")
    parser.add_argument(
        "--min-time", type=float, default=0.2, help="timed calls add up to about this many seconds (default 0.2)"
    )
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    parser.add_argument("--json", metavar="PATH", help="write the result JSON here")
    parser.add_argument("--save", action="store_true", help="write it as benchmarks/results/<device>-<commit>.json")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument("--table", metavar="FILE.json", help="print an existing result file as markdown; no run")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def _parse_list(parser, text, allowed, option):
    items = tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        parser.error(f"{option}: expected a comma list of {', '.join(allowed)}; got {text!r}")
    return items


def _parse_sizes(parser, text):
    if text in SIZE_SETS:
        return SIZE_SETS[text]
    try:
        shapes = tuple(tuple(int(d) for d in item.split("x")) for item in text.split(",") if item.strip())
    except ValueError:
        shapes = ()
    if not shapes or any(len(s) < 2 or min(s) < 1 for s in shapes):
        parser.error(f"--sizes: expected {', '.join(SIZE_SETS)} or shapes like 128x32,64x16x64x64; got {text!r}")
    return shapes


def make_config(parser, args):
    impls = _parse_list(parser, args.impls, IMPLS, "--impls")
    if args.no_compile:
        impls = tuple(impl for impl in impls if impl != "compile")
    ops = OPS if args.ops == "all" else _parse_list(parser, args.ops, OPS, "--ops")
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    if threads < 1 or args.warmup < 0 or args.repeats < 1 or args.max_repeats < args.repeats or args.min_time < 0:
        parser.error("--threads and --repeats must be >= 1, --warmup and --min-time >= 0, --max-repeats >= --repeats")
    return Config(
        device=args.device,
        shapes=_parse_sizes(parser, args.sizes),
        dtypes=tuple(DTYPES[name] for name in _parse_list(parser, args.dtypes, tuple(DTYPES), "--dtypes")),
        impls=impls,
        ops=ops,
        passes=_parse_list(parser, args.passes, PASSES, "--passes"),
        eps_modes=_parse_list(parser, args.eps, EPS_MODES, "--eps"),
        threads=threads,
        timing=TimingSettings(args.warmup, args.repeats, args.max_repeats, args.min_time),
        quiet=args.quiet,
    )


def write_json(report, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.table:
            report = json.loads(Path(args.table).read_text(encoding="utf-8"))
            add_derived_fields(report["results"])
            print(render_markdown(report))
            return 0
        config = make_config(parser, args)
    except SystemExit as exit_request:  # argparse's way of reporting bad arguments or --help
        return exit_request.code if isinstance(exit_request.code, int) else 2
    if config.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    report = run_benchmark(config)
    print(render_markdown(report) if args.markdown else render_text(report))
    if args.json:
        write_json(report, args.json)
    if args.save:
        write_json(report, save_path(report))
    return 1 if errors_of(report) else 0
