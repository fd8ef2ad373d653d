"""The run: every selected (dtype, shape, case, impl) timed in one process, copy baseline included."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch

from .cases import (
    KERNEL_IMPLS,
    NO_EPS,
    build_copy_step,
    build_fresh_step,
    build_step,
    dtype_name,
    make_cases,
    make_inputs,
    shape_text,
)
from .compiled import CompiledFunctions, raised_recompile_limit
from .report import git_state, load_average, make_report
from .rows import add_derived_fields, error_row, timing_row
from .suites import OPS
from .timing import TimingSettings, timer_for


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
    clock: str = "wall"  # timing.CLOCKS; "cpu" on the CPU only


class Runner:
    def __init__(self, config: Config):
        self.config = config
        self.timer = timer_for(config.device, config.threads, config.clock)
        self.compiled = CompiledFunctions() if "compile" in config.impls else None
        self.kernel_impls = [impl for impl in KERNEL_IMPLS if impl in config.impls]
        self.done = 0
        self.total = self._count()

    def _count(self):
        cases = make_cases(self.config, None, None)
        per_shape = len(cases) * len(self.kernel_impls) + ("copy" in self.config.impls)
        per_shape += sum(self._has_fresh(case) for case in cases)
        return per_shape * len(self.config.shapes) * len(self.config.dtypes)

    def run(self) -> list[dict]:
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
            if self._has_fresh(case):
                rows.append(self._measure_fresh(case, data))
        del data
        if self.config.device == "cuda":
            torch.cuda.empty_cache()
        return rows

    def _function(self, impl, case):
        if impl == "compile":
            return self.compiled.get(case.op, case.eps, case.training)
        return OPS[case.op].eager if impl == "eager" else OPS[case.op].vae_ext

    def _measure_impl(self, impl, case, data):
        labels = (impl, case.op, case.pass_name, case.eps, case.dtype, case.shape)
        try:
            with torch.set_grad_enabled(case.training):
                start = time.perf_counter()
                step = build_step(self._function(impl, case), case, data)
                timing = self.timer.measure(step, self.config.timing, time.perf_counter() - start)
        except Exception as error:  # noqa: BLE001  a failing impl (typically torch.compile) is recorded
            return self._report(error_row(*labels, error), case.describe())
        return self._report(timing_row(*labels, timing), case.describe())

    def _has_fresh(self, case):
        return "fresh" in self.config.impls and OPS[case.op].traffic is not None

    def _measure_fresh(self, case, data):
        labels = ("fresh", case.op, case.pass_name, case.eps, case.dtype, case.shape)
        try:
            timing = self.timer.measure(build_fresh_step(case, data), self.config.timing)
        except Exception as error:  # noqa: BLE001
            return self._report(error_row(*labels, error), case.describe())
        return self._report(timing_row(*labels, timing), case.describe())

    def _measure_copy(self, data, dtype, shape):
        labels = ("copy", "copy", "fwd", NO_EPS, dtype, shape)
        description = f"copy {dtype_name(dtype)} {shape_text(shape)}"
        try:
            timing = self.timer.measure(build_copy_step(data), self.config.timing)
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


def run_benchmark(config: Config) -> dict:
    """Runs every selected row and returns the result document (docs/design.md section 6)."""
    load_start, git = load_average(), git_state()  # the state the run starts from
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        runner = Runner(config)
        if runner.compiled is None:
            results = runner.run()
        else:
            with raised_recompile_limit():
                results = runner.run()
    finally:
        torch.set_num_threads(previous_threads)
    return make_report(config, results, runner.timer.method, load_start, git)
