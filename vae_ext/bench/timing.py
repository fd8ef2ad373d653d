"""Timing one call: torch.utils.benchmark on the CPU, CUDA events on a GPU (docs/design.md section 6).

Both first make one untimed call (it compiles, for torch.compile) and report its time apart.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

# "wall": time.perf_counter (what a user waits; on a shared machine it includes other processes'
# turns); "cpu": time.process_time, user + system CPU time of this process's threads (page
# faults included; with one thread, the call's own work: the steadier clock on a shared CPU).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class TimingSettings:
    warmup: int
    min_repeats: int
    max_repeats: int
    min_time: float

    def repetitions(self, seconds_per_call: float) -> int:
        """Calls adding up to about min_time seconds, within [min_repeats, max_repeats]."""
        wanted = math.ceil(self.min_time / max(seconds_per_call, 1e-9))
        return max(self.min_repeats, min(self.max_repeats, wanted))


@dataclass
class Timing:
    times: list[float]  # seconds per call: one per sample (a CPU sample is the mean of a block of calls)
    first_call_s: float
    calls: int  # timed calls in all
    block_calls: int = 1  # calls per sample (the largest block when a run took several)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


def _first_call(step, sync) -> float:
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


class CpuTimer:
    """torch.utils.benchmark.Timer on ``threads`` threads: blocks of calls sized so the timer costs
    < 0.01% of a block (blocked_autorange), for ``--min-time`` seconds bounded by ``--repeats`` ..
    ``--max-repeats`` calls at the warm-up's time per call, and at least ``--repeats`` calls."""

    method = "torch.utils.benchmark.Timer.blocked_autorange, median of block means"

    def __init__(self, threads: int, clock: str = "wall"):
        self.threads = threads
        # "cpu": this process's CPU time (user + system, page faults included), not other processes' turns
        self.clock = CLOCKS[clock]
        if clock != "wall":
            self.method += f", {clock} clock (time.process_time)"

    def measure(self, step, settings: TimingSettings, setup_s: float = 0.0) -> Timing:
        from torch.utils import benchmark

        first_call_s = setup_s + _first_call(step, lambda: None)
        timer = benchmark.Timer(stmt="step()", globals={"step": step}, num_threads=self.threads, timer=self.clock)
        per_call = timer.timeit(settings.warmup).mean if settings.warmup else first_call_s
        run_time = min(max(settings.min_time, settings.min_repeats * per_call), settings.max_repeats * per_call)
        times, calls, block = [], 0, 1
        while calls < settings.min_repeats:  # a call slower than its estimate (a busy machine) can end a run early
            measurement = timer.blocked_autorange(min_run_time=run_time)
            times += measurement.times
            calls += measurement.number_per_run * len(measurement.times)
            block = max(block, measurement.number_per_run)
        return Timing(times, first_call_s, calls, block)


class CudaTimer:
    """A pair of CUDA events around each call after the warm-up calls, one synchronize at the end."""

    method = "CUDA events per call"

    def measure(self, step, settings: TimingSettings, setup_s: float = 0.0) -> Timing:
        first_call_s = setup_s + _first_call(step, torch.cuda.synchronize)
        warmup = self._sample(step, settings.warmup) if settings.warmup else [first_call_s]
        times = self._sample(step, settings.repetitions(statistics.median(warmup)))
        return Timing(times, first_call_s, len(times))

    @staticmethod
    def _sample(step, repetitions: int) -> list[float]:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repetitions)]
        for start, end in zip(starts, ends):
            start.record()
            step()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) * 1e-3 for start, end in zip(starts, ends)]


def timer_for(device: str, threads: int, clock: str = "wall"):
    return CudaTimer() if device == "cuda" else CpuTimer(threads, clock)
