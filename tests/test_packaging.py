"""The built wheel ships every recipe and config and the built-in model: a user who installs longrope
can run `extend --recipe` and `accelerate launch --config_file` with the shipped files."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_recipe_config_and_asset(tmp_path):
    pytest.importorskip("setuptools")
    tree = tmp_path / "tree"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           str(tree), "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("longrope-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    pkg = ROOT / "src" / "longrope"
    wanted = {f"longrope/{p.relative_to(pkg).as_posix()}" for sub in ("recipes", "assets")
              for p in (pkg / sub).rglob("*") if p.is_file()}
    assert {"longrope/recipes/accelerate/fsdp.yaml", "longrope/recipes/accelerate/deepspeed_zero3.yaml",
            "longrope/recipes/ablation/short-base.yaml", "longrope/assets/builtin/model.safetensors"} <= wanted
    assert sorted(wanted - shipped) == []
