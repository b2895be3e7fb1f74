"""Each optional extra installed alone in a fresh venv runs the command it is for (issue 29), through
scripts/check_extras.sh: minutes per extra (the CPU torch wheel, then `pip install '.[EXTRA]'`), so slow.
`runtimes` (llama-cpp-python compiles ~35 min) is left to `scripts/check_extras.sh runtimes`."""
from __future__ import annotations

import os

import pytest

from tests.helpers import SRC, run_group

SCRIPT = SRC.parent / "scripts" / "check_extras.sh"


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["base", "plot", "dist", "data", "eval", "gguf", "lora", "deepspeed"])
def test_extra_alone_in_a_fresh_venv_runs_its_command(extra, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = run_group(["bash", str(SCRIPT), extra], timeout=1800, env={**env, "EXTRAS_DIR": str(tmp_path / "venvs")})
    assert r.returncode == 0 and f"== {extra}: ok" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
