"""An installed (non-editable) `hrm` carries its Hydra configs: nothing reaches back into the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hrm.training.cli import compose_config, to_pretrain_config

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`hrm` built as a wheel from a copy of the sources and installed into a bare target folder."""
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools (the dev extra has it)")
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(root / "dist")],
        check=True,
        cwd=root,
    )
    wheel = next((root / "dist").glob("hrm-*.whl"))
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, cwd=root)
    return site


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site), "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_installed_package_composes_the_presets(installed, tmp_path):
    code = (
        "import hrm.training.cli as cli\n"
        "from pathlib import Path\n"
        f"assert Path(cli.__file__).is_relative_to({str(installed)!r}), cli.__file__\n"
        "config = cli.to_pretrain_config(cli.compose_config(['+experiment=trm_sudoku_extreme_mlp']))\n"
        "print(config.model_dump_json())\n"
    )
    done = run_installed(installed, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    expected = to_pretrain_config(compose_config(["+experiment=trm_sudoku_extreme_mlp"]))
    assert done.stdout.strip() == expected.model_dump_json()
    assert expected.global_batch_size == 768 and expected.arch.model_extra["mlp_t"] is True


def test_pretrain_script_reads_the_packaged_configs(installed, tmp_path):
    done = run_installed(installed, tmp_path, str(REPO / "pretrain.py"), "arch.H_cycles=4", "--cfg", "job")
    assert done.returncode == 0, done.stderr
    assert "H_cycles: 4" in done.stdout
