"""The posterior benchmark (vae_ext.bench.posterior, `bench posterior`): rows, saved bytes, table and CLI."""

from __future__ import annotations

import json

import torch

from vae_ext.bench import posterior as posterior_bench

SHAPE = (2, 4, 6, 6)
N = 2 * 4 * 6 * 6  # latent elements


def test_rows_and_saved_bytes():
    rows = posterior_bench.run_posterior_bench("cpu", repeats=1, shapes=(SHAPE,), warmup=0)
    impls = posterior_bench.IMPLS if posterior_bench.diffusers_available() else posterior_bench.IMPLS[1:]
    assert [r["impl"] for r in rows] == [i for _ in posterior_bench.LAYOUTS for i in impls]
    for row in rows:
        assert row["shape"] == list(SHAPE) and row["dtype"] == "float32"
        assert row["fwd_ms"] > 0 and row["fwd_bwd_ms"] > 0
        beyond = row["saved_bytes_beyond_moments"]
        # Beyond the moments: the clamped logvar copy (4 B/element) and the 8-byte seed for
        # vae_ext; the seed alone without the clamp; std, var and the randn draw for diffusers.
        expected = {"vae_ext": 4 * N + 8, "vae_ext_unclamped": 8, "diffusers": 12 * N}[row["impl"]]
        assert beyond == expected, row
        assert row["saved_bytes"] == beyond + 2 * N * 4  # + the moments themselves
        assert row["saved_bytes_per_latent_element"] == beyond / N
        assert ("speedup_vs_diffusers" in row) == ("diffusers" in impls)


def test_markdown_table():
    rows = posterior_bench.run_posterior_bench(
        "cpu", repeats=1, shapes=(SHAPE,), warmup=0, impls=("vae_ext",), layouts=("contiguous",)
    )
    table = posterior_bench.format_markdown(rows).splitlines()
    assert len(table) == 3 and table[0].startswith("| latent")
    assert "| 2×4×6×6 | contiguous | float32 | vae_ext |" in table[2] and "4.03 B/element" in table[2]


def test_command_line_writes_json(tmp_path, capsys):
    path = tmp_path / "posterior.json"
    code = posterior_bench.main(
        ["--repeats", "1", "--shape", "1x2x4x4", "--layout", "channels_last", "--json", str(path)]
    )
    assert code == 0
    report = json.loads(path.read_text())
    assert report["benchmark"] == "posterior" and report["torch"] == torch.__version__
    assert {r["layout"] for r in report["results"]} == {"channels_last"}
    assert json.loads(capsys.readouterr().out) == report["results"]
