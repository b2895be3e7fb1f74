"""Find and run llama.cpp's own Hugging Face -> GGUF converter (`convert_hf_to_gguf.py`).

No llama.cpp checkout is needed: llama-cpp-python's source distribution vendors llama.cpp with its
converter and `gguf-py`. Get it with

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d sdist

and pass `--converter sdist/llama_cpp_python-0.3.36.tar.gz` (or the unpacked converter file, or
set LLAMA_CPP_CONVERTER). The converter's files are unpacked once into ~/.cache/longrope/ (or
$LONGROPE_CACHE), where later exports find them without the option.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from ..errors import LongRopeError
from ..io import atomic_dir

SCRIPT = "convert_hf_to_gguf.py"
HINT = ("get it without a llama.cpp checkout: `pip download --no-deps --no-binary :all: "
        "llama-cpp-python==0.3.36 -d sdist`, then --converter sdist/llama_cpp_python-0.3.36.tar.gz")


def cache_dir() -> Path:
    return Path(os.environ.get("LONGROPE_CACHE") or Path.home() / ".cache" / "longrope")


def find_converter(given: str | Path | None = None) -> Path:
    """The converter script: `given` (script, folder or sdist), else $LLAMA_CPP_CONVERTER, else one
    unpacked in the cache, else an sdist in the current folder or the cache."""
    for source in (given, os.environ.get("LLAMA_CPP_CONVERTER")):
        if source:
            return _resolve(Path(source).expanduser())
    unpacked = sorted(cache_dir().glob(f"*/vendor/llama.cpp/{SCRIPT}"))
    if unpacked:
        return unpacked[-1]
    sdists = sorted([*Path.cwd().glob("llama_cpp_python-*.tar.gz"), *cache_dir().glob("llama_cpp_python-*.tar.gz")])
    if sdists:
        return _resolve(sdists[-1])
    raise LongRopeError(f"llama.cpp's {SCRIPT} not found (pass --converter or set LLAMA_CPP_CONVERTER); {HINT}")


def _resolve(path: Path) -> Path:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _unpack(path)
    for candidate in (path, path / SCRIPT, path / "vendor" / "llama.cpp" / SCRIPT):
        if candidate.is_file() and candidate.name == SCRIPT:
            return candidate
    raise LongRopeError(f"no {SCRIPT} at {path}; {HINT}")


def _unpack(sdist: Path) -> Path:
    """Unpack the converter, its `conversion` package and `gguf-py` from an sdist into the cache."""
    name = sdist.name.rsplit(".tar.gz", 1)[0].rsplit(".tgz", 1)[0]
    target = cache_dir() / name
    script = target / "vendor" / "llama.cpp" / SCRIPT
    if script.is_file():
        return script
    try:
        with tarfile.open(sdist) as tar, atomic_dir(target) as tmp:
            wanted = [m for m in tar.getmembers() if _wanted(m.name)]
            if not any(m.name.endswith(f"vendor/llama.cpp/{SCRIPT}") for m in wanted):
                raise LongRopeError(f"{sdist} holds no vendor/llama.cpp/{SCRIPT}; {HINT}")
            for member in wanted:
                member.name = member.name.split("/", 1)[1]  # strip the sdist's top folder
                tar.extract(member, tmp, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise LongRopeError(f"cannot unpack {sdist}: {e}") from None
    return script


def _wanted(name: str) -> bool:
    parts = name.split("/")
    if len(parts) < 4 or parts[1:3] != ["vendor", "llama.cpp"]:
        return False
    return parts[3] in (SCRIPT, "conversion", "gguf-py")


def run_converter(converter: Path, hf_dir: Path, out_file: Path, *, outtype: str = "auto",
                  pre_tokenizer: str | None = None, timeout: float = 3600) -> None:
    """Convert the Hugging Face folder `hf_dir` to `out_file`; one-line error with the converter's
    last words on failure."""
    cmd = [sys.executable, str(Path(__file__).with_name("_convert.py")), str(converter), pre_tokenizer or "-",
           str(hf_dir), "--outfile", str(out_file), "--outtype", outtype]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LongRopeError(f"llama.cpp's converter ran over {timeout:.0f} s") from None
    if done.returncode != 0 or not out_file.is_file():
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip(" ^~\t")]
        last = lines[-1] if lines else f"exit status {done.returncode}"
        if len(lines) > 1 and ":" not in last:  # a bare exception: name the line that raised it
            last = f"{last} at {lines[-2].strip()}"
        if "pre-tokenizer was not recognized" in last:
            raise LongRopeError("llama.cpp's converter does not recognise this tokenizer's pre-tokenizer: pass "
                                "--pre-tokenizer NAME, llama.cpp's name for the same splitting rules (the "
                                "built-in model's is 'starcoder': single digits + the GPT-2 regex)")
        raise LongRopeError(f"llama.cpp's converter failed: {last.strip()[:300]}")
