"""Every launch plan of the CUDA kernels, once each: the workload benchmarks/run_gpu.sh runs
under compute-sanitizer (memcheck, racecheck, synccheck), and with --compare a check of every
output against the CPU kernels.

    python benchmarks/sanitizer_cases.py [--device cuda|cpu] [--compare] [--exact-kl] [--list]

The plans (csrc/cuda/kernels_cuda.cuh, tests/cuda_emulation/README.md): row lengths 2^k and
2^k + 1 for k = 0..15 reach every team size on the vector path and on the scalar path
(cols % 4 != 0) for every dtype; 3 rows leave the last row tile partial; 2 rows of 2^15 and
more columns are split over blocks (the partial-sums kernel); a misaligned start takes the
scalar path at a vector-path length; strided rows are halves of one tensor (h.chunk(2, 1)).
Blocks loop over row tiles when there are more tiles than the grid holds: 2^22 + 1 rows of
one column, and 16385 rows of 2049 and 2052 columns (float32 only, to keep memcheck short).

Each operand is its own allocation (run with PYTORCH_NO_CUDA_MEMORY_CACHING=1 so that
memcheck sees its bounds). --compare checks z and every gradient against the CPU kernels bit
for bit and the per-sample KL within the rounding of two summation orders (bit for bit with
--exact-kl). --device cpu runs the same calls on the CPU kernels (a dry run of this script).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import vae_ext  # noqa: F401  (loads the ops)

OPS = torch.ops.vae_ext
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
SEED = 0x5EED1234ABCD


def shapes():
    """(dtype, rows, cols, layout) for every plan."""
    out = []
    for dtype in DTYPES:
        for cols in sorted({c for k in range(16) for c in (1 << k, (1 << k) + 1)}):
            out.append((dtype, 2 if cols >= 1 << 15 else 3, cols, "contiguous"))
        out.append((dtype, 2, (1 << 17) + 8, "contiguous"))  # longer split rows
        out.append((dtype, 5, 96, "strided"))
        out.append((dtype, 5, 97, "strided"))
        out.append((dtype, 4, 256, "misaligned"))
        out.append((dtype, (1 << 22) + 1, 1, "contiguous"))  # blocks loop, short rows
    for cols in (2049, 2052):  # blocks loop, long rows
        out.append((torch.float32, 16385, cols, "contiguous"))
    return out


def laid_out(values, layout, half=0):
    """values in a fresh allocation of exactly its size, with the given layout."""
    rows, cols = values.shape
    if layout == "strided":  # one half of a [rows, 2 cols] tensor
        t = torch.empty(rows, 2 * cols, dtype=values.dtype, device=DEVICE).narrow(1, half * cols, cols)
    elif layout == "misaligned":
        t = torch.empty(rows * cols + 1, dtype=values.dtype, device=DEVICE)[1:].view(rows, cols)
    else:
        t = torch.empty(rows, cols, dtype=values.dtype, device=DEVICE)
    return t.copy_(values)


def inputs(dtype, rows, cols, layout, gen):
    """The operands of one shape, drawn on the device."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32

    def randn(*size, scale=1.0):
        return (torch.randn(*size, generator=gen, dtype=compute, device=DEVICE) * scale).to(dtype)

    return {
        "mu": laid_out(randn(rows, cols), layout, 0),
        "logvar": laid_out(randn(rows, cols, scale=2.0), layout, 1),
        "eps": laid_out(randn(rows, cols), layout, 1),
        "grad_z": laid_out(randn(rows, cols), layout, 1),
        "grad_kl": torch.randn(rows, generator=gen, dtype=compute, device=DEVICE),
        "prior_mu": randn(cols, scale=0.5),  # per-latent: row stride 0
        "prior_logvar": randn(rows, cols, scale=0.5),  # full
        "seed": torch.tensor(SEED, dtype=torch.int64, device=DEVICE),
    }


def calls(x):
    """The op calls of one shape: every kernel and the output and gradient combinations."""
    mu, lv, eps, seed = x["mu"], x["logvar"], x["eps"], x["seed"]
    pm, pl, gz, gk = x["prior_mu"], x["prior_logvar"], x["grad_z"], x["grad_kl"]
    return {
        "reparameterize_kl sampled, priors": lambda: OPS.reparameterize_kl(mu, lv, None, seed, pm, pl),
        "reparameterize_kl given": lambda: OPS.reparameterize_kl(mu, lv, eps, None, None, None),
        "gaussian_kl": lambda: OPS.gaussian_kl(mu, lv, None, None),
        "reparameterize": lambda: OPS.reparameterize(mu, lv, eps),
        "reparameterize_sampled": lambda: OPS.reparameterize_sampled(mu, lv, seed),
        "reparameterize_kl_backward all, sampled": lambda: OPS.reparameterize_kl_backward(
            gz, gk, mu, lv, None, seed, pm, pl, True
        ),
        "reparameterize_kl_backward kl only": lambda: OPS.reparameterize_kl_backward(
            None, gk, mu, lv, None, None, None, None, False
        ),
        "reparameterize_backward given": lambda: OPS.reparameterize_backward(gz, lv, eps, None),
    }


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def on_cpu(x):
    return {k: v.cpu() for k, v in x.items()}


def compare(name, got, want, cols, exact_kl):
    """Differences between a device result and the CPU kernels' (a list of strings)."""
    problems = []
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.cpu()
        is_kl = name.startswith(("reparameterize_kl ", "gaussian_kl")) and i == len(got) - 1
        if g.shape != w.shape or g.dtype != w.dtype:
            problems.append(f"{name} output {i}: shape or dtype differs")
        elif is_kl and not exact_kl:
            # Two summation orders of n terms (each >= 0) differ by at most 2 (n - 1) u sum.
            u = 2.0**-53 if g.dtype == torch.float64 else 2.0**-24
            bound = 2 * max(cols - 1, 0) * u * w.double().abs() + 1e-300
            ok = ((g.double() - w.double()).abs() <= bound) | (g.isnan() & w.isnan()) | (g == w)
            if not bool(ok.all()):
                problems.append(f"{name} kl: differs beyond the summation-order bound")
        elif not torch.equal(g.view(-1).view(torch.uint8), w.view(-1).view(torch.uint8)):
            problems.append(f"{name} output {i}: bits differ from the CPU kernels")
    return problems


def main(argv=None):
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--compare", action="store_true", help="check every output against the CPU kernels")
    parser.add_argument("--exact-kl", action="store_true", help="require the KL bit for bit too")
    parser.add_argument("--list", action="store_true", help="print the shapes and exit")
    args = parser.parse_args(argv)
    if args.list:
        for dtype, rows, cols, layout in shapes():
            print(f"{str(dtype).replace('torch.', '')} [{rows}, {cols}] {layout}")
        return 0
    DEVICE = torch.device(args.device)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible; use --device cpu for a dry run", file=sys.stderr)
        return 2
    start = time.perf_counter()
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    n_calls, problems = 0, []
    for dtype, rows, cols, layout in shapes():
        x = inputs(dtype, rows, cols, layout, gen)
        reference = calls(on_cpu(x)) if args.compare else {}
        for name, call in calls(x).items():
            result = as_tuple(call())
            n_calls += 1
            if args.compare:
                where = f"{str(dtype).replace('torch.', '')} [{rows}, {cols}] {layout}: {name}"
                want = as_tuple(reference[name]())
                problems += [f"{where}: {p}" for p in compare(name, result, want, cols, args.exact_kl)]
        if args.device == "cuda":
            torch.cuda.synchronize()
    for p in problems[:30]:
        print("FAIL", p)
    print(
        f"sanitizer cases: {n_calls} op calls on {len(shapes())} shapes, device {args.device}, "
        f"{'compared with the CPU kernels, ' + str(len(problems)) + ' differences, ' if args.compare else ''}"
        f"{time.perf_counter() - start:.1f} s"
    )
    return 1 if problems else 0


DEVICE = torch.device("cpu")

if __name__ == "__main__":
    sys.exit(main())
