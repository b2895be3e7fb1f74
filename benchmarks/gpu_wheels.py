"""The pure-Python wheels a GPU machine lacks for `longrope[eval,gguf]`, unpacked into one folder.

    python benchmarks/gpu_wheels.py OUT_DIR PRESENT_FILE

PRESENT_FILE: comma-separated names of the packages already on the machine (the list under "Python
packages already there" in the device tool's KINDS.md). Each missing requirement is fetched for
CPython 3.12 (`pip download --no-deps`, or built with `pip wheel` when PyPI has only an sdist),
its own requirements followed; then every wheel is unzipped into OUT_DIR/site and lm-eval's task
folders other than ruler/ are dropped (longrope runs only its RULER tasks; the rest is ~70 MB).
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

WANT = ["lm-eval>=0.4.13,<0.5", "wonderwords>=2.2", "gguf>=0.17"]
ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
             for a in ("--platform", p)]


def fetch(spec: str, folder: Path) -> list[Path]:
    """The wheel(s) of one requirement, downloaded (or built from its sdist) into folder."""
    before = set(folder.iterdir())
    pip = [sys.executable, "-m", "pip"]
    r = subprocess.run(pip + ["download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                              "--implementation", "cp", *PLATFORMS, "-d", str(folder), spec], capture_output=True)
    if r.returncode:
        subprocess.run(pip + ["wheel", "-q", "--no-deps", "-w", str(folder), spec], check=True)
    return [p for p in set(folder.iterdir()) - before if p.suffix == ".whl"]


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [str(q).split(";")[0] for q in reqs if q.marker is None or q.marker.evaluate(ENV)]


def main(out: str, present_file: str) -> None:
    present = {canonicalize_name(x.strip()) for x in Path(present_file).read_text().split(",") if x.strip()}
    wheels, site = Path(out) / "wheels", Path(out) / "site"
    wheels.mkdir(parents=True, exist_ok=True)
    todo, seen = list(WANT), set()
    while todo:
        spec = todo.pop()
        name = canonicalize_name(Requirement(spec).name)
        if name in seen or name in present:
            continue
        seen.add(name)
        for w in fetch(spec, wheels):
            todo += requirements(w)
    shutil.rmtree(site, ignore_errors=True)
    for w in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(w) as z:
            z.extractall(site)
    tasks = site / "lm_eval" / "tasks"
    for d in tasks.iterdir():
        if d.is_dir() and d.name != "ruler":
            shutil.rmtree(d)
    print(f"{len(list(wheels.glob('*.whl')))} wheels -> {site}: {sorted(os.listdir(site))}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
