"""The training-step benchmark (vae_ext.bench.step, `bench step`): the latent layers compute the same
loss, the rows and comparisons, saved bytes, the command line and its JSON. Tiny sizes, no timing asserted."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from vae_ext.bench import step as step_bench
from vae_ext.bench.step import latents, measure, models, results
from vae_ext.bench.step.models import Size

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_diffusers = pytest.mark.skipif(not models.diffusers_available(), reason="needs diffusers (the test extra)")

TINY = {
    "mlp-32": Size(5, (1, 4, 6), (3,), 7),
    "conv": Size(3, (2, 8, 8), (4, 2, 2), 5),
    "autoencoder-kl": Size(2, (3, 8, 8), (4, 4, 4), 8),
}


def tiny_case(name):
    return dataclasses.replace(models.MODELS[name], sizes={"tiny": TINY[name]})


def model_names():
    return [pytest.param(name, marks=needs_diffusers if name == "autoencoder-kl" else ()) for name in TINY]


@pytest.mark.parametrize("name", model_names())
def test_layers_give_the_same_loss_and_gradients_with_the_same_eps(name):
    model, x = tiny_case(name).make("tiny", "cpu", seed=3)
    model, x = model.double(), x.double()  # float64: the layers' difference, not float32 rounding
    h = model.encoder(x)
    assert h.shape[1] == 2 * TINY[name].latent[0] and tuple(h.shape[2:]) == TINY[name].latent[1:]
    if name == "autoencoder-kl":  # the moments diffusers' encoder hands the posterior
        assert h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous()
    eps = torch.randn((x.shape[0], *TINY[name].latent), generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    layers = latents.latent_layers(name)
    outcomes = []
    for latent in ("eager", "vae_ext"):
        model.zero_grad(set_to_none=True)
        loss = model.loss(x, layers[latent], eps)
        loss.backward()
        outcomes.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (ours_loss, ours_grads) = outcomes
    assert torch.isfinite(eager_loss)
    torch.testing.assert_close(ours_loss, eager_loss, rtol=1e-12, atol=1e-12)
    for ours, eager in zip(ours_grads, eager_grads):
        torch.testing.assert_close(ours, eager, rtol=1e-9, atol=1e-11)
    # The free layer: z = mu, kl = 0; the loss is the reconstruction through mu alone.
    free = model.loss(x, layers["free"], eps)
    torch.testing.assert_close(free, model.loss(x, lambda h, e: (h.chunk(2, 1)[0], torch.zeros(len(h), dtype=h.dtype))))


def measured(name, mode="eager", rounds=2, steps=2):
    model, x = tiny_case(name).make("tiny", "cpu")
    layers = latents.latent_layers(name)
    impls = [measure.Impl(mode, latent, measure.loss_function(model, layers[latent], mode)) for latent in layers]
    measure.measure_case(model, x, impls, "cpu", rounds=rounds, steps_per_round=steps, warmup=1)
    return [results.impl_row(name, TINY[name], impl) for impl in impls]


@pytest.mark.parametrize("name", model_names())
def test_rows_saved_bytes_and_comparison(name):
    rows = measured(name)
    assert [r["latent"] for r in rows] == ["eager", "vae_ext", "free"]
    for row in rows:
        assert "error" not in row and row["steps"] == 4 and len(row["round_median_ms"]) == 2
        assert row["min_ms"] <= row["median_ms"] and row["round_spread"] >= 0
        assert row["peak_bytes"] is None  # CPU: no peak memory
        assert row["batch"] == TINY[name].batch and row["latent_shape"] == list(TINY[name].latent)
    saved = {r["latent"]: r["saved_bytes"] for r in rows}
    assert 0 < saved["free"] <= saved["vae_ext"] < saved["eager"]
    # Beyond the free layer (whose z is a view of the moments), vae_ext keeps z (the decoder's input),
    # the 8-byte seed and views of the moments; the AutoencoderKL posterior adds its clamped logvar.
    latent_bytes = TINY[name].batch * torch.Size(TINY[name].latent).numel() * 4
    clamped = latent_bytes if name == "autoencoder-kl" else 0
    assert saved["vae_ext"] - saved["free"] == latent_bytes + 8 + clamped
    (entry,) = results.compare(rows)
    assert entry["model"] == name and entry["mode"] == "eager"
    assert entry["round_ratio_min"] <= entry["vae_ext_over_eager"] <= entry["round_ratio_max"]
    assert entry["verdict"] in ("slower", "faster", "within noise")


def test_compare_from_round_times():
    def row(latent, rounds):
        return {"model": "m", "mode": "eager", "latent": latent, "median_ms": sorted(rounds)[1],
                "round_median_ms": rounds, "round_spread": (max(rounds) - min(rounds)) / sorted(rounds)[1]}  # fmt: skip

    rows = [row("eager", [10.0, 12.0, 11.0]), row("vae_ext", [9.0, 9.0, 10.0]), row("free", [8.0, 8.0, 8.0])]
    (entry,) = results.compare(rows)
    assert entry["vae_ext_over_eager"] == pytest.approx(0.9)  # rounds: 9/10, 9/12, 10/11
    assert (entry["round_ratio_min"], entry["round_ratio_max"]) == pytest.approx((0.75, 10 / 11))
    assert entry["verdict"] == "faster"
    assert entry["latent_cost_ms"] == 3 and entry["share_removed"] == pytest.approx(2 / 3)
    assert entry["latent_cost_above_noise"]
    rows[1]["round_median_ms"] = [11.0, 11.0, 12.0]  # one round faster, two slower: no verdict
    assert results.compare(rows)[0]["verdict"] == "within noise"
    rows[1]["round_median_ms"] = [11.0, 13.0, 12.0]
    assert results.compare(rows)[0]["verdict"] == "slower"


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    path, table = tmp_path / "step.json", tmp_path / "step.md"
    argv = ["--models", "mlp-32", "--no-compile", "--rounds", "2", "--steps", "1", "--warmup", "0", "--quiet"]
    assert step_bench.main([*argv, "--clock", "cpu", "--json", str(path), "--markdown", str(table)]) == 0
    report = json.loads(path.read_text())
    assert report["benchmark"] == "step" and report["torch"] == torch.__version__
    assert report["threads"] == torch.get_num_threads() and len(report["load_average_start"]) == 3
    assert report["settings"]["clock"] == "cpu" and report["compile_options"] == measure.COMPILE_OPTIONS
    assert report["commit"] == "unknown" or len(report["commit"]) == 40
    assert [(r["mode"], r["latent"]) for r in report["results"]] == [("eager", name) for name in latents.LATENTS]
    assert [c["mode"] for c in report["comparisons"]] == ["eager"]
    out = capsys.readouterr().out
    assert out.strip() == table.read_text().strip()
    assert sum(line.startswith("| mlp-32 | B=256, 1×28×28 → 32 | eager |") for line in out.splitlines()) == 1
    assert step_bench.main(["--table", str(path)]) == 0
    assert capsys.readouterr().out.strip() == out.strip()


def test_a_case_without_its_package_is_skipped_with_a_message(monkeypatch, capsys):
    missing = dataclasses.replace(models.MODELS["autoencoder-kl"], needs="no_such_package_for_vae_ext")
    monkeypatch.setitem(models.MODELS, "autoencoder-kl", missing)
    report = step_bench.run_step_bench(step_bench.StepConfig(models=("autoencoder-kl",), quiet=True))
    assert report["results"] == [] and report["comparisons"] == []
    (why,) = report["skipped"]
    assert why == "autoencoder-kl: skipped, needs no_such_package_for_vae_ext (pip install no_such_package_for_vae_ext)"


@pytest.mark.parametrize("argv", [["--models", "resnet"], ["--rounds", "1"], ["--sizes", "huge"], ["--latents", "x"]])
def test_bad_arguments_exit_with_2(argv, capsys):
    assert step_bench.main(argv) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_step_matches_eager_and_counts_saved_bytes():
    rows = measured("mlp-32", mode="compile", rounds=2, steps=1)
    assert all("error" not in r and r["median_ms"] > 0 for r in rows)
    saved = {r["latent"]: r["saved_bytes"] for r in rows}
    assert 0 < saved["free"] <= saved["vae_ext"]


@needs_cuda
def test_cuda_rows_have_peak_memory():
    model, x = tiny_case("mlp-32").make("tiny", "cuda")
    layers = latents.latent_layers("mlp-32")
    impls = [measure.Impl("eager", name, measure.loss_function(model, layers[name], "eager")) for name in layers]
    measure.measure_case(model, x, impls, "cuda", rounds=2, steps_per_round=1, warmup=1)
    assert all(impl.error is None and impl.peak_bytes > 0 for impl in impls)
