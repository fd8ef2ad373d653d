"""README stays true: its own-loop example and its distributions snippet run, its test
command is CI's, and every reference to docs/design.md names a section that exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _example(name):
    match = re.search(rf"<!-- readme-example: {name} -->\n```python\n(.*?)```", README, re.S)
    assert match, f"README has no example {name!r}"
    return match.group(1)


def test_own_training_loop_example_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, "-c", _example("own-loop")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    numbers = [float(v) for v in re.findall(r"-?\d+\.\d+", result.stdout)]
    loss, recon, kl = numbers
    assert abs(loss - (recon + kl)) < 0.02 and kl > 0  # -ELBO = reconstruction + KL (β = 1)
    assert (tmp_path / "vae.pt").exists()


def test_readme_test_command_is_the_one_ci_runs():
    commands = re.findall(r"^pip install .*$", README, re.M)
    tests = [c for c in commands if c.endswith("python -m pytest")]
    assert len(tests) == 1
    assert tests[0] in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    main_job = [c for c in commands if "python -m vae_ext train" in c]
    assert len(main_job) == 1 and '".[train]"' in main_job[0] and "numpy" in main_job[0]


def test_design_references_resolve():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\. ", design, re.M))
    assert sections == {"1", "2", "3", "4", "5", "6"}
    cited = []
    for folder in ("vae_ext", "csrc", "tests", "benchmarks", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".h", ".cpp", ".cu", ".md", ".sh") and path.name != "design.md":
                text = path.read_text(encoding="utf-8")
                assert not re.search(r"(?<!docs/)design\.md section", text), f"{path}: cite docs/design.md"
                cited += [(path.name, n) for n in re.findall(r"docs/design\.md sections? (\d+)", text)]
    assert cited and all(n in sections for _, n in cited), cited


def test_distributions_snippet_runs_and_means_what_its_comments_say():
    import torch
    from torch.distributions import Independent, Normal, kl_divergence

    import vae_ext

    snippet = re.search(r"### Distributions\n\n```python\n(.*?)```", README, re.S).group(1)
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6) * 0.5
    names = {"vae_ext": vae_ext, "mu": mu, "logvar": logvar, "moments": torch.randn(2, 8, 3, 3)}
    exec(snippet, names)
    assert names["z"].shape == mu.shape and names["kl"].shape == (4,)
    same = Independent(Normal(mu, torch.exp(logvar / 2)), mu.dim() - 1)
    torch.testing.assert_close(names["kl"], kl_divergence(same, Independent(Normal(torch.zeros(6), torch.ones(6)), 1)))
    assert names["posterior"].mean.shape == (2, 4, 3, 3)
