"""The python examples of docs/distributions.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "distributions.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def test_doc_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert "kl_divergence(q, Normal(0.0, 1.0))" in blocks[0] and "DiagonalGaussianDistribution(moments)" in blocks[1]


def test_doc_examples_run(monkeypatch):
    pytest.importorskip("diffusers", reason="the AutoencoderKL examples need diffusers")
    from diffusers.models.autoencoders import autoencoder_kl

    # The last example swaps diffusers' class: restore it after the test.
    monkeypatch.setattr(autoencoder_kl, "DiagonalGaussianDistribution", autoencoder_kl.DiagonalGaussianDistribution)
    namespace = {}
    for block in python_blocks():
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["loss"].isfinite() and namespace["q"].batch_shape == (8,)
    assert namespace["h"].grad is not None
