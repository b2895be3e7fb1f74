"""Helpers shared by the test packages (`from tests.helpers import ...`): tiny random models of each
supported family built in memory (no downloads), a character tokenizer, a tiny model folder, seeded
text documents, the loss-log reader, and subprocesses that cannot outlive their test (each in its
own session, its whole process group killed on leaving: done, failed or timed out)."""
from __future__ import annotations

import json
import os
import random
import signal
import string
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3 match the tiny configs' pad/bos/eos

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


def tiny_config(family: str = "llama", *, head_dim: int = 16, heads: int = 4, kv_heads: int = 2,
                layers: int = 2, vocab: int = 128, window: int = 32, rope_scaling: dict | None = None,
                partial_rotary_factor: float | None = None, **extra):
    """A small config of `family` whose pre-trained window (max_position_embeddings) is `window`."""
    from transformers import AutoConfig

    kw = dict(hidden_size=head_dim * heads, num_attention_heads=heads, num_key_value_heads=kv_heads,
              num_hidden_layers=layers, intermediate_size=2 * head_dim * heads, vocab_size=vocab,
              max_position_embeddings=window, rope_theta=10000.0, tie_word_embeddings=False,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family in ("mistral", "qwen3", "llama"):
        kw["head_dim"] = head_dim
    if family == "phi3":
        kw["original_max_position_embeddings"] = window
    if partial_rotary_factor is not None:
        kw["partial_rotary_factor"] = partial_rotary_factor
    if rope_scaling is not None:
        kw["rope_scaling"] = rope_scaling
    kw.update(extra)
    return AutoConfig.for_model(family, **kw)


def make_tiny(family: str = "llama", seed: int = 0, **kw):
    """A tiny randomly initialised causal LM in float32 eval mode, with SDPA attention."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = tiny_config(family, **kw)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)
    return model.eval()


def char_tokenizer(bos: bool = True):
    """One token per printable character (vocab 104 < the tiny models' 128); `bos` adds <s> first."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for ch in string.printable:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def save_tiny(path: Path, *, bos: bool = True, **kw) -> Path:
    """A tiny random Llama (window 32 unless told) with the character tokenizer, as a model folder."""
    make_tiny("llama", **kw).save_pretrained(path)
    char_tokenizer(bos).save_pretrained(path)
    return path


def write_texts(folder: Path, n: int = 6, words: int = 300, seed: int = 0) -> Path:
    """`n` seeded documents of `words` words each, one .txt file per document."""
    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "north", "seven", "blue"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i}.txt").write_text(" ".join(rng.choice(vocab) for _ in range(words)) + "\n",
                                            encoding="utf-8")
    return folder


def cli_env(threads: int = 1) -> dict:
    """Environment for a `python -m longrope` subprocess: the source tree importable, fixed threads,
    no launcher variables inherited."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(threads)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


@contextmanager
def torch_threads(n: int):
    """torch on `n` CPU threads inside the block (tiny models: more threads only add contention)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def without_module(monkeypatch, top: str):
    """Inside the block, importing `top` (or a submodule) raises ImportError, as if not installed."""
    import builtins

    real = builtins.__import__

    def block(name, *a, **k):
        if name == top or name.startswith(top + "."):
            raise ImportError(name)
        return real(name, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(builtins, "__import__", block)
        yield


def losses(log: Path) -> list[float]:
    """The losses of a training run's log.jsonl, in step order."""
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group `proc` leads (started with start_new_session=True), reap it and
    close its pipes; a group already gone is fine."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@contextmanager
def spawn(cmd: list, **kw):
    """`subprocess.Popen(cmd)` (text mode) in a new session; on leaving the block, however it is left,
    the whole process group is killed, so no worker (torchrun's, a launcher's) survives the test."""
    kw.setdefault("text", True)
    proc = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **kw)
    try:
        yield proc
    finally:
        kill_group(proc)


def run_group(cmd: list, *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """Run `cmd` to the end with its output captured (text), at most `timeout` seconds (then
    subprocess.TimeoutExpired); its process group is killed afterwards in every case. The output
    goes through files, not pipes, so a worker left holding them cannot stall the wait."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with spawn(cmd, stdout=out, stderr=err, **kw) as proc:
            proc.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        text = [f.read().decode("utf-8", errors="replace") for f in (out, err)]
    return subprocess.CompletedProcess(proc.args, proc.returncode, *text)
