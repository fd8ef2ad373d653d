"""What README.md, docs/ and csrc/README.md state, checked against the code wherever a test can:
cited files and sections exist, documented signatures and keys are the code's, numbers quoted
from the sources are the sources', and the options they name are the commands' options."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from helpers import needs_compiled

import vae_ext
from vae_ext import _ops, reference
from vae_ext.bench.cli import build_parser as bench_parser
from vae_ext.bench.step.cli import build_parser as step_parser
from vae_ext.train.cli import build_parser as train_parser

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOT = Path(vae_ext.__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "csrc" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DESIGN = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
TOP_DIRS = (".ci", "csrc", "vae_ext", "tests", "docs", "benchmarks")
# A path ends in a word character or /, and not before a glob's * (a pattern, not a path);
# "vae_ext/copy" and "vae_ext/fresh" are ratio columns of the op table.
PATH = re.compile(rf"(?<![\w/.<])(?:{'|'.join(re.escape(d) for d in TOP_DIRS)})/[\w./-]*[\w/](?![\w/*-]|\.[\w*])")
RATIO_COLUMNS = {"vae_ext/copy", "vae_ext/fresh"}


def _exists(cited):
    """A cited path in the checkout, or for vae_ext/ in the package under test (.ci/tests_in_venv.sh
    runs the tests on the installed package, beside a copy of the tree without vae_ext/)."""
    if cited.startswith("vae_ext/") and not (ROOT / "vae_ext").is_dir():
        return (PACKAGE_ROOT / cited).exists()
    return (ROOT / cited).exists()


def _text(path):
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_exist(doc):
    cited = set(PATH.findall(_text(doc))) - RATIO_COLUMNS
    missing = sorted(p for p in cited if not _exists(p))
    assert cited and not missing, missing


def _anchor(heading):
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_their_sections_exist(doc):
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", _text(doc)):
        if target.startswith("http"):
            continue
        linked = (doc.parent / target).resolve() if target else doc
        assert linked.exists(), f"{doc.name}: {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", _text(linked), re.M)
            assert anchor in {_anchor(h) for h in headings}, f"{doc.name}: {target}#{anchor}"


def _api_block():
    match = re.search(r"## API\n\n```python\n(.*?)```", README, re.S)
    assert match
    return match.group(1)


def _documented_signatures():
    """name -> the parameter list README's API block writes for vae_ext.<name>(...)."""
    block = re.sub(r"\n\s+", " ", _api_block())
    return dict(re.findall(r"vae_ext\.(\w+)\(([^)]*)\)", block))


def test_api_block_signatures_are_the_code():
    documented = _documented_signatures()
    assert set(documented) == {"reparameterize", "gaussian_kl", "reparameterize_kl", "build_info"}
    for name, params in documented.items():
        assert params.strip() == _written(inspect.signature(getattr(vae_ext, name))), name


def _written(signature):
    """A signature as the README writes it: names and defaults, no annotations."""
    parts, star = [], False
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        default = "" if p.default is inspect.Parameter.empty else "=" + repr(p.default).replace("'", '"')
        parts.append(p.name + default)
    return ", ".join(parts)


def test_build_info_keys_are_the_documented_ones():
    documented = re.search(r"build_info\(\) -> dict\s+# (.*)", _api_block()).group(1)
    assert [k.strip() for k in documented.split(",")] == list(vae_ext.build_info())


def test_reduction_is_taken_where_the_readme_says():
    takes = {
        "gaussian_kl": vae_ext.gaussian_kl,
        "reparameterize_kl": vae_ext.reparameterize_kl,
        "ELBOLoss(...)": vae_ext.ELBOLoss,
    }
    does_not = {"reparameterize": vae_ext.reparameterize, "VAE(...)": vae_ext.VAE, "VAE.forward": vae_ext.VAE.forward}
    sentence = re.search(r"`gaussian_kl`, `reparameterize_kl` and `ELBOLoss\(\.\.\.\)` take\n`reduction=", README)
    assert sentence and "(`reparameterize`, `VAE(...)` and `VAE.forward` do not)" in README
    assert all("reduction" in inspect.signature(f).parameters for f in takes.values())
    assert not any("reduction" in inspect.signature(f).parameters for f in does_not.values())


def test_no_positional_argument_after_mu_and_logvar():
    for name in ("reparameterize", "gaussian_kl", "reparameterize_kl"):
        params = list(inspect.signature(getattr(vae_ext, name)).parameters.values())
        assert [p.name for p in params[:2]] == ["mu", "logvar"]
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:]), name


def _taylor_terms(source, dtype):
    body = re.search(rf"VAE_HD {dtype} expm1_minus_x\({dtype} x, {dtype} em1\) \{{(.*?)\n\}}", source, re.S).group(1)
    return len(re.findall(r"^\s+(?:float|double)? ?p = ", body, re.M))


def test_design_taylor_term_counts_are_the_kernels():
    source = _text(ROOT / "csrc" / "vae_math.h")
    float_terms, double_terms = _taylor_terms(source, "float"), _taylor_terms(source, "double")
    stated = re.search(r"`\|δ\| < 0\.25` \((\d+) terms in float32.*?; (\d+)\nin float64", DESIGN, re.S)
    assert stated and (int(stated.group(1)), int(stated.group(2))) == (float_terms, double_terms) == (7, 11)


def test_cpp_standard_is_the_builds():
    cmake = _text(ROOT / "CMakeLists.txt")
    standard = re.search(r"set\(CMAKE_CXX_STANDARD (\d+)\)", cmake).group(1)
    assert f"a C++{standard} compiler" in README
    assert f"a C++{standard} compiler" in _text(ROOT / "docs" / "cpp.md")


def test_pre_commit_formats_what_the_quality_gate_formats():
    quality = _text(ROOT / ".ci" / "quality.sh")
    folders = re.search(r"find ([\w/ ]+?) \\\(", quality).group(1).split()
    config = _text(ROOT / ".pre-commit-config.yaml")
    pattern = re.compile(re.search(r"id: clang-format.*?files: (\S+)", config, re.S).group(1))
    sources = [p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in (".h", ".cpp", ".cu", ".cuh")]
    assert sources and all(pattern.search(str(p.relative_to(ROOT))) for p in sources)


def test_options_named_in_the_readme_exist():
    known = set()
    for parser in (train_parser(), bench_parser(), step_parser()):
        known |= {s for action in parser._actions for s in action.option_strings}
    # pip's, setup.py's, nvcc's and python -m build's
    not_ours = {"--no-build-isolation", "--inplace", "--version", "--sdist", "--no-isolation"}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", README)) - not_ours
    assert named and named <= known, named - known


@needs_compiled
def test_reference_z_is_the_kernels_to_a_few_ulps_not_to_the_bit():
    # README (Determinism): ε and the KL are the reference's bit for bit, z is not: its σ comes
    # from torch's exp, so z differs in the last bits of the larger of |μ| and |ε·σ|.
    gen = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(64, 1000, generator=gen), 3 * torch.randn(64, 1000, generator=gen)
    seed = torch.tensor(123)
    compiled = _ops.compiled.reparameterize_sampled(mu, logvar, seed)
    ref = reference.reparameterize_sampled(mu, logvar, seed)
    larger = torch.maximum(mu.abs(), (reference.sample_eps(seed, mu) * torch.exp(0.5 * logvar)).abs())
    ulp = torch.nextafter(larger, torch.full_like(larger, torch.inf)) - larger
    difference = (compiled - ref).abs()
    assert (difference > 0).any() and (difference <= 8 * ulp).all()
    assert "`z` and the gradients are\nbit-identical between CPU and CUDA" in README
