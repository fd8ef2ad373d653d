"""``python -m vae_ext``: the subcommands, --version, and a core import free of the tools' libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import vae_ext
from vae_ext.__main__ import COMMANDS, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(*args, env=None):
    env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_import_vae_ext_loads_no_tool_library():
    # torch itself imports tqdm when it is installed (torch.hub): what counts is what vae_ext adds.
    code = (
        "import sys, torch\n"
        "before = set(sys.modules)\n"
        "import vae_ext, vae_ext.functional, vae_ext.modules, vae_ext.losses, vae_ext.schedules\n"
        "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(added & {'matplotlib', 'tqdm', 'PIL', 'sklearn', 'numpy'}), 'vae_ext' in added)"
    )
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]


def test_help_lists_each_command_with_a_one_line_summary(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, summary in COMMANDS.items():
        assert "\n" not in summary and len(summary) <= 70
        assert name in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"vae_ext {vae_ext.__version__}"


def test_info_prints_build_info(capsys):
    assert main(["info"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == json.loads(json.dumps(vae_ext.build_info()))
    assert {"version", "torch", "cpu_kernels", "cuda_kernels", "cuda_arch_list", "backend"} <= info.keys()
    assert main(["info", "extra"]) == 2


def test_subcommand_help_is_the_commands_own(capsys):
    for name, option in (("train", "--latent-dim"), ("bench", "--sizes")):
        try:
            code = main([name, "--help"])
        except SystemExit as exit_request:  # train lets argparse exit; bench returns its status
            code = exit_request.code
        assert code == 0
        out = capsys.readouterr().out
        assert f"usage: python -m vae_ext {name}" in out and option in out


def test_unknown_command_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_module_runs_as_a_program():
    result = _python("-m", "vae_ext", "info")
    assert result.returncode == 0 and json.loads(result.stdout)["version"] == vae_ext.__version__
