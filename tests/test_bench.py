"""The benchmark harness (vae_ext.bench): byte model, the timed functions, timers, the CLI, its JSON and plot."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math

import pytest
import torch

import vae_ext
from vae_ext import bench
from vae_ext.bench import cases, timing
from vae_ext.bench.suites.latent import eager_reparameterize_kl

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_pytest_benchmark = pytest.mark.skipif(
    importlib.util.find_spec("pytest_benchmark") is None, reason="needs pytest-benchmark"
)
TINY_TIMING = ["--warmup", "1", "--repeats", "2", "--max-repeats", "2", "--min-time", "0", "--quiet"]
RESULT_KEYS = {"impl", "op", "pass", "eps", "dtype", "shape", "median_ms", "gbps"}


def float64_latent(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=generator, dtype=torch.float64)
    logvar = 0.7 * torch.randn(shape, generator=generator, dtype=torch.float64)
    eps = torch.randn(shape, generator=generator, dtype=torch.float64)
    return mu, logvar, eps


def run_cli(argv, capsys):
    code = bench.main(argv)
    return code, capsys.readouterr().out


def find_row(results, **fields):
    matches = [r for r in results if all(r[k] == v for k, v in fields.items())]
    assert len(matches) == 1, fields
    return matches[0]


# --------------------------------------------------------------------------- byte model


@pytest.mark.parametrize(
    ("op", "pass_name", "eps", "passes"),
    [
        ("reparameterize_kl", "fwd", "sampled", 3),
        ("reparameterize_kl", "fwd", "given", 4),
        ("reparameterize_kl", "bwd", "sampled", 5),
        ("reparameterize_kl", "bwd", "given", 6),
        ("reparameterize_kl", "fwd+bwd", "sampled", 8),
        ("reparameterize_kl", "fwd+bwd", "given", 10),
        ("reparameterize", "bwd", "given", 4),
        ("gaussian_kl", "fwd+bwd", "none", 6),
        ("copy", "fwd", "none", 2),
    ],
)
def test_model_bytes_counts_tensor_passes(op, pass_name, eps, passes):
    assert bench.model_bytes(op, pass_name, eps, numel=1000, itemsize=2) == passes * 1000 * 2


# --------------------------------------------------------------------------- the timed functions


@pytest.mark.parametrize("shape", [(6, 5), (3, 2, 4, 5)], ids=["2d", "4d"])
@pytest.mark.parametrize("op", bench.OPS)
def test_eager_and_vae_ext_compute_the_same(op, shape):
    """The impls compared must compute the same thing: outputs and input gradients."""
    mu, logvar, eps = float64_latent(shape, seed=3)
    generator = torch.Generator().manual_seed(4)
    grads = {"z": torch.randn(shape, generator=generator, dtype=torch.float64)}
    grads["kl"] = torch.randn(shape[:1], generator=generator, dtype=torch.float64)
    results = []
    for function in (bench.OPS[op].eager, bench.OPS[op].vae_ext):
        leaves = (mu.clone().requires_grad_(), logvar.clone().requires_grad_())
        outputs = function(*leaves, eps)
        output_grads = [grads[name] for name in bench.OPS[op].outputs]
        results.append([*outputs, *torch.autograd.grad(outputs, leaves, output_grads)])
    eager, ours = results
    assert len(eager) == len(ours) == len(bench.OPS[op].outputs) + 2
    for expected, actual in zip(eager, ours):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@needs_pytest_benchmark
def test_benchmark_fixture_vae_ext_fwd_bwd(benchmark):
    mu64, logvar64, eps64 = float64_latent((64, 16), seed=5)
    mu, logvar, eps = (t.float().requires_grad_(t is not eps64) for t in (mu64, logvar64, eps64))
    generator = torch.Generator().manual_seed(6)
    grad_z = torch.randn(64, 16, generator=generator)
    grad_kl = torch.randn(64, generator=generator)

    def fwd_bwd():
        z, kl = vae_ext.reparameterize_kl(mu, logvar, eps=eps)
        return torch.autograd.grad((z, kl), (mu, logvar), (grad_z, grad_kl))

    grad_mu, grad_logvar = benchmark(fwd_bwd)
    leaves = (mu.detach().double().requires_grad_(), logvar.detach().double().requires_grad_())
    outputs = eager_reparameterize_kl(*leaves, eps.double())
    expected = torch.autograd.grad(outputs, leaves, (grad_z.double(), grad_kl.double()))
    torch.testing.assert_close(grad_mu.double(), expected[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_logvar.double(), expected[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["reparameterize_kl", "reparameterize", "gaussian_kl"])
@pytest.mark.parametrize("eps", ["sampled", "given"])
@pytest.mark.parametrize("pass_name", ["fwd", "bwd", "fwd+bwd"])
def test_fresh_floor_moves_the_op_traffic_into_fresh_outputs(op, eps, pass_name, monkeypatch):
    if not bench.OPS[op].uses_eps and eps == "given":
        pytest.skip("gaussian_kl takes no eps")
    shape = (6, 5)
    data = cases.make_inputs(shape, torch.float32, "cpu")
    case = cases.Case(op, pass_name, eps if bench.OPS[op].uses_eps else "none", torch.float32, shape)
    reads = []
    for module, name in ((torch, "neg"), (torch, "add"), (torch, "addcmul"), (torch.linalg, "vecdot")):
        original = getattr(module, name)  # record what each op reads
        monkeypatch.setattr(module, name, lambda *ts, _f=original: reads.extend(ts) or _f(*ts))
    outputs = [out for part in cases.build_fresh_step(case, data)() for out in part]
    monkeypatch.undo()
    n_sized = [out for out in outputs if out.shape == shape]
    assert all(out.shape in (shape, shape[:1]) for out in outputs)
    # Each output is freshly allocated; N-sized reads + writes = the byte model's count.
    pointers = {t.data_ptr() for t in vars(data).values()}
    assert all(out.data_ptr() not in pointers for out in outputs)
    assert len(reads) + len(n_sized) == bench.tensor_passes(op, pass_name, case.eps)
    expected = {"fwd": data.mu + data.logvar, "bwd": data.grad_z + data.mu}
    if op == "reparameterize_kl" and eps == "sampled" and pass_name != "fwd+bwd":
        torch.testing.assert_close(outputs[0], expected[pass_name])  # the torch.add(mu, logvar), add(g, mu)


def test_traffic_must_match_the_byte_model():
    op = bench.OPS["reparameterize"]
    wrong = dataclasses.replace(
        op, name="reparameterize_wrong", traffic={"fwd": (("mu",), 1), "bwd": op.traffic["bwd"]}
    )
    with pytest.raises(ValueError, match="does not match tensor_passes"):
        bench.register(wrong)


# --------------------------------------------------------------------------- the command line


def test_cli_quick_run_writes_the_result_json(tmp_path, capsys):
    path = tmp_path / "result.json"
    code, out = run_cli(["--sizes", "quick", "--no-compile", "--json", str(path), *TINY_TIMING], capsys)
    assert code == 0
    report = json.loads(path.read_text())
    assert {"device", "torch", "vae_ext", "commit", "results"} <= report.keys()
    assert report["device"] == f"cpu: {bench.cpu_model()}, {torch.get_num_threads()} threads"
    assert report["torch"] == torch.__version__ and report["vae_ext"] == vae_ext.__version__
    assert report["commit"] == "unknown" or len(report["commit"]) == 40
    results = report["results"]
    assert all(RESULT_KEYS <= row.keys() and "error" not in row for row in results)
    # CPU rows are timed in blocks of calls (torch.utils.benchmark): whole blocks, at least --repeats calls.
    assert all(row["median_ms"] > 0 and row["repetitions"] >= 2 for row in results)
    assert all(row["repetitions"] >= row["block_calls"] >= 1 for row in results)
    assert report["timing"]["method"].startswith("torch.utils.benchmark")
    assert report["bytes_model"]["reparameterize_kl"] == {"fwd": 3, "bwd": 5} and report["bytes_model"]["copy"] == {
        "fwd": 2
    }

    shapes = [[128, 32], [4096, 256]]
    cases = {(r["op"], r["pass"], r["eps"], r["dtype"], tuple(r["shape"])) for r in results if r["impl"] != "copy"}
    assert len(cases) == 2 * 2 * 2 * 3  # dtypes x shapes x eps x passes
    for case in cases:
        impls = {r["impl"] for r in results if (r["op"], r["pass"], r["eps"], r["dtype"], tuple(r["shape"])) == case}
        assert impls == {"eager", "vae_ext", "fresh"}
    copies = [(r["dtype"], r["shape"]) for r in results if r["impl"] == "copy"]
    assert sorted(copies) == sorted((d, s) for d in ("bfloat16", "float32") for s in shapes)
    assert len(results) == 3 * len(cases) + len(copies)
    table_lines = [line for line in out.splitlines() if line.startswith("reparameterize_kl ")]
    assert len(table_lines) == len(cases)
    check_byte_accounting_and_ratios(results)


def check_byte_accounting_and_ratios(results):
    numel = 4096 * 256
    fields = {"op": "reparameterize_kl", "dtype": "float32", "shape": [4096, 256]}
    ours = find_row(results, impl="vae_ext", **{"pass": "fwd", "eps": "given"}, **fields)
    # fwd with eps given: reads mu, logvar, eps and writes z, 4 bytes each
    assert ours["gbps"] == pytest.approx(4 * numel * 4 / (ours["median_ms"] * 1e-3) / 1e9, rel=1e-12)
    both = find_row(results, impl="vae_ext", **{"pass": "fwd+bwd", "eps": "sampled"}, **fields)
    assert both["bytes"] == (3 + 5) * numel * 4
    half = find_row(
        results,
        impl="eager",
        op="reparameterize_kl",
        dtype="bfloat16",
        shape=[128, 32],
        **{"pass": "bwd", "eps": "given"},
    )
    assert half["bytes"] == (5 + 1) * 128 * 32 * 2
    copy = find_row(results, impl="copy", dtype="float32", shape=[4096, 256])
    assert copy["gbps"] == pytest.approx(2 * numel * 4 / (copy["median_ms"] * 1e-3) / 1e9, rel=1e-12)
    assert ours["frac_of_copy"] == pytest.approx(ours["gbps"] / copy["gbps"], rel=1e-12)
    eager = find_row(results, impl="eager", **{"pass": "fwd", "eps": "given"}, **fields)
    assert ours["speedup_vs_eager"] == pytest.approx(eager["median_ms"] / ours["median_ms"], rel=1e-12)
    assert ours["speedup_vs_compile"] is None
    fresh = find_row(results, impl="fresh", **{"pass": "fwd+bwd", "eps": "sampled"}, **fields)
    assert fresh["bytes"] == both["bytes"]  # the same traffic, as fresh-output elementwise ops
    assert both["frac_of_fresh"] == pytest.approx(fresh["median_ms"] / both["median_ms"], rel=1e-12)


def test_cli_filters_ops_passes_and_4d_latents(tmp_path, capsys):
    path = tmp_path / "result.json"
    argv = ["--sizes", "4x3x5x5", "--dtypes", "float64", "--ops", "all", "--passes", "bwd", "--eps", "given"]
    argv += ["--impls", "vae_ext,copy", "--json", str(path), *TINY_TIMING]
    assert run_cli(argv, capsys)[0] == 0
    results = json.loads(path.read_text())["results"]
    kernel_rows = {(r["op"], r["eps"]) for r in results if r["impl"] == "vae_ext"}
    assert kernel_rows == {("reparameterize_kl", "given"), ("reparameterize", "given"), ("gaussian_kl", "none")}
    assert {r["pass"] for r in results if r["impl"] == "vae_ext"} == {"bwd"}
    kl_row = find_row(results, op="gaussian_kl")
    assert kl_row["bytes"] == 4 * 300 * 8


def test_table_renders_an_existing_result_file(tmp_path, capsys):
    def row(impl, ms, gbps, op="reparameterize_kl"):
        fields = {"op": op, "pass": "fwd", "eps": "given", "dtype": "float32", "shape": [4, 8]}
        if impl == "copy":
            fields.update(op="copy", eps="none")
        return {"impl": impl, **fields, "median_ms": ms, "gbps": gbps}

    report = {
        "device": "cpu: Test CPU, 3 threads",
        "torch": "2.13.0",
        "vae_ext": "0.1.0",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "results": [row("copy", 1.0, 8.0), row("eager", 6.0, 1.0), row("compile", 3.0, 2.0), row("vae_ext", 2.0, 3.0)],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(report))
    code, out = run_cli(["--table", str(path)], capsys)
    assert code == 0
    assert "cpu: Test CPU, 3 threads" in out and "0123456789ab" in out
    header = "| op | pass | eps | dtype | shape | eager ms | eager GB/s | compile ms | compile GB/s | vae_ext ms |"
    assert header in out
    line = "| reparameterize_kl | fwd | given | float32 | 4x8 | 6 | 1 | 3 | 2 | 2 | 3 | 8 | 0.38 | 3.00x | 1.50x |"
    assert line in out
    code, out = run_cli(["--table", str(path), "--passes", "bwd"], capsys)
    assert code == 0 and "| reparameterize_kl |" not in out  # --passes filters the rows


def test_compile_failure_is_recorded_and_the_run_goes_on(tmp_path, capsys, monkeypatch):
    def failing_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", failing_compile)
    path = tmp_path / "result.json"
    argv = ["--sizes", "8x4", "--dtypes", "float32", "--passes", "fwd", "--json", str(path), *TINY_TIMING]
    code, out = run_cli(argv, capsys)
    assert code == 0
    results = json.loads(path.read_text())["results"]
    failed = [r for r in results if r["impl"] == "compile"]
    assert len(failed) == 2  # eps sampled and given
    assert all(r["median_ms"] is None and "no compiler here" in r["error"] for r in failed)
    assert all(r["median_ms"] > 0 for r in results if r["impl"] != "compile")
    assert "error" in out


@pytest.mark.slow
def test_compile_impl_runs(tmp_path, capsys):
    path = tmp_path / "result.json"
    argv = ["--sizes", "8x4", "--dtypes", "float32", "--passes", "fwd", "--eps", "given", "--impls", "compile,vae_ext"]
    assert run_cli([*argv, "--json", str(path), *TINY_TIMING], capsys)[0] == 0
    compiled = find_row(json.loads(path.read_text())["results"], impl="compile")
    assert "error" not in compiled and compiled["median_ms"] > 0
    assert compiled["speedup_vs_compile"] == 1.0


@pytest.mark.parametrize(
    "argv",
    [["--dtypes", "float8"], ["--impls", "numpy"], ["--sizes", "128"], ["--passes", "back"], ["--repeats", "0"]],
)
def test_bad_arguments_exit_with_2(argv, capsys):
    assert bench.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_save_path_names_device_and_commit():
    report = {"device": "cpu: Intel(R) Xeon(R) Gold 6338, 16 threads", "commit": "abcdef0123456789" + "0" * 24}
    path = bench.save_path(report)
    assert path.name == "cpu-intel-r-xeon-r-gold-6338-16-threads-abcdef0.json"
    assert path.parent.name == "results" and path.parent.parent.name == "benchmarks"
    assert bench.save_path({**report, "dirty": True}).name.endswith("-abcdef0-dirty.json")
    assert bench.save_path(report, prefix="step-").name == "step-" + path.name  # bench step --save


@needs_cuda
def test_cli_cuda_run(tmp_path, capsys):
    path = tmp_path / "result.json"
    argv = ["--device", "cuda", "--sizes", "256x64", "--no-compile", "--json", str(path), *TINY_TIMING]
    assert run_cli(argv, capsys)[0] == 0
    report = json.loads(path.read_text())
    assert report["device"] == torch.cuda.get_device_name()
    assert report["cuda"] == torch.version.cuda
    assert all("error" not in r and r["median_ms"] > 0 for r in report["results"])
    assert math.prod(find_row(report["results"], impl="copy", dtype="float32")["shape"]) == 256 * 64


# --------------------------------------------------------------------------- timers, suites and the plot


def test_cpu_timer_counts_the_calls_it_times():
    calls = []
    settings = timing.TimingSettings(warmup=2, min_repeats=3, max_repeats=50, min_time=0.0)
    result = timing.CpuTimer(threads=1).measure(lambda: calls.append(1), settings)
    assert result.calls >= 3 and len(result.times) * result.block_calls >= result.calls >= len(result.times)
    # The untimed first call, the warm-up and the block sizing run on top of the timed calls.
    assert len(calls) >= 1 + 2 + result.calls
    assert all(t > 0 for t in result.times) and result.median_s > 0 and result.first_call_s > 0


@needs_cuda
def test_cuda_timer_times_each_call():
    x = torch.randn(1 << 20, device="cuda")
    settings = timing.TimingSettings(warmup=2, min_repeats=4, max_repeats=4, min_time=0.0)
    result = timing.CudaTimer().measure(lambda: x.mul_(1.0), settings)
    assert result.calls == len(result.times) == 4 and result.block_calls == 1 and result.median_s > 0


def test_ops_by_suite_and_all(tmp_path, capsys):
    assert bench.suites()["latent"] == ("reparameterize_kl", "reparameterize", "gaussian_kl")
    path = tmp_path / "result.json"
    argv = ["--sizes", "4x3", "--dtypes", "float32", "--ops", "latent", "--passes", "fwd", "--eps", "given"]
    assert run_cli([*argv, "--impls", "vae_ext", "--json", str(path), *TINY_TIMING], capsys)[0] == 0
    assert [r["op"] for r in json.loads(path.read_text())["results"]] == list(bench.suites()["latent"])
    with pytest.raises(ValueError, match="reserved name"):
        bench.register(bench.OPS["reparameterize"].__class__("all", "x", ("z",), None, None, {"fwd": 1, "bwd": 1}))


def test_plot_of_a_result_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from vae_ext.bench.plot import plot_report

    path = tmp_path / "result.json"
    argv = ["--sizes", "8x4,64x16", "--dtypes", "float32", "--passes", "fwd,bwd", "--impls", "eager,vae_ext,copy"]
    assert run_cli([*argv, "--json", str(path), "--plot", str(tmp_path / "p.png"), *TINY_TIMING], capsys)[0] == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000
    figure = plot_report(json.loads(path.read_text()), "reparameterize_kl", tmp_path / "q.png")
    assert len(figure.axes) == 2 * 2  # passes x (dtype, eps) columns
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["eager", "vae_ext", "copy"]
    assert set(lines) == {"eager", "vae_ext", "copy"}
    assert list(lines["vae_ext"].get_xdata()) == [32, 1024]  # by element count
    assert bench.main(["--table", str(path), "--plot", str(tmp_path / "r.png"), "--plot-op", "gaussian_kl"]) == 1
    assert "no rows of op 'gaussian_kl'" in capsys.readouterr().err
