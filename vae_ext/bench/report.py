"""The result document: the run's rows plus where and how they were measured; its file name."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

import vae_ext

from .bytes import passes_table

_ROOT = Path(__file__).resolve().parents[2]


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


def load_average():
    """The machine's 1, 5 and 15 minute load averages (others' work shares a CPU), or None."""
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def make_report(config, results: list[dict], timing_method: str, load_start=None, git=None) -> dict:
    """``git``: git_state() taken when the run started (default: now)."""
    commit, dirty = git or git_state()
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
            "method": timing_method,
            "statistic": "median",
            "warmup": config.timing.warmup,
            "min_repeats": config.timing.min_repeats,
            "max_repeats": config.timing.max_repeats,
            "min_time_s": config.timing.min_time,
        },
        "bytes_model": passes_table(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }
    if config.device == "cuda":
        report["cuda"] = torch.version.cuda
        report["capability"] = list(torch.cuda.get_device_capability())
    return report


def save_path(report, prefix=""):
    slug = re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-")
    results_dir = (_ROOT if report["commit"] != "unknown" else Path.cwd()) / "benchmarks" / "results"
    dirty = "-dirty" if report.get("dirty") else ""
    return results_dir / f"{prefix}{slug}-{report['commit'][:7]}{dirty}.json"


def write_json(report: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
