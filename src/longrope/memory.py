"""Memory estimates, in bytes, from a model's shape: what one forward pass, a training step and a KV
cache hold. Two users share them: a command refuses a length the machine cannot hold in one line
before any work (`check_lengths`), and the dry-run plan states every stage's memory per GPU and
which stage does not fit (`stage_memory` in plan.py, `verdict` here).

Small functions, each named by what it estimates, of a `Dims` (read from a config, or from a
recipe's model_shape when the model is not here). What they count is what longrope's code keeps
alive:

- inference (perplexity, the search, generation's prefill): no autograd; the residual stream, its
  normed copy, queries/keys/values and the attention output of one layer at a time, the MLP's
  intermediate activations (perplexity runs the MLPs `mlp_chunk` positions at a time; generation's
  prefill at full length), the rotary tables and ids, and one `chunk` of float32 logits. Attention
  itself is not counted: SDPA's fused kernels (flash / memory-efficient) need no length x length
  matrix. These are lower bounds, so a refusal never stops a run that would fit.
- generation keeps the KV cache: 2 x layers x kv_heads x head_dim values per position.
- training (train/finetune.py): AdamW with float32 master weights under bfloat16 autocast: 4 bytes
  of weights, 4 of gradients and 8 of moments per trained parameter (16 B; a 7B model: ~108 GiB
  before activations). FSDP over N GPUs divides that by N and adds the unsharded parameters of the
  layers being computed. LoRA trains the adapters alone (16 B each) on a frozen base (2 B per
  parameter in bfloat16, 4 in float32).
- training activations under activation checkpointing: every layer keeps its input (the residual
  stream) for the backward pass; one layer at a time is recomputed with all its intermediates, and
  their gradients exist at the same time; the loss runs `loss_chunk` positions of the LM head at a
  time.

tests/test_memory.py compares the training estimate with the peak resident memory of a CPU
fine-tuning run of the built-in model.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import LongRopeError

GiB = 2 ** 30


@dataclass
class Dims:
    """What the estimates need of a model: counts from its config (or a recipe's model_shape)."""
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False

    @classmethod
    def of(cls, config) -> "Dims":
        """`config` itself when it is a Dims, else read from a transformers config."""
        if isinstance(config, cls):
            return config
        from .models import text_config

        cfg = text_config(config)
        heads = cfg.num_attention_heads
        return cls(cfg.num_hidden_layers, cfg.hidden_size, heads, getattr(cfg, "num_key_value_heads", None) or heads,
                   getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
                   getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size,
                   cfg.vocab_size, bool(getattr(cfg, "tie_word_embeddings", False)))

    @classmethod
    def from_shape(cls, s: dict) -> "Dims":
        """From a recipe's model_shape: layers and hidden required; heads (hidden / 128), kv_heads
        (= heads), intermediate (8/3 hidden, rounded up to 256) and vocab (32000) default."""
        try:
            hidden = int(s["hidden"])
            heads = int(s.get("heads", max(1, hidden // 128)))
            inter = int(s.get("intermediate", 256 * math.ceil(8 * hidden / 3 / 256)))
            return cls(int(s["layers"]), hidden, heads, int(s.get("kv_heads", heads)), hidden // heads, inter,
                       int(s.get("vocab", 32000)))
        except (KeyError, TypeError, ValueError) as e:
            raise LongRopeError(f"the recipe's model_shape needs whole numbers for layers and hidden ({e})") from None

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder layer, by its usual module name."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_params(self) -> int:
        return sum(a * b for a, b in self.linears().values()) + 2 * self.hidden

    def params(self) -> int:
        return self.layers * self.layer_params() + (1 if self.tied else 2) * self.vocab * self.hidden


# -- weights and one inference forward pass ------------------------------------------------------
def weight_bytes(model) -> int:
    """Parameters and buffers of a loaded model."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def param_bytes(config, dtype_bytes: int) -> int:
    """The parameters of a model of this shape, stored in `dtype_bytes` each (no model loaded)."""
    return Dims.of(config).params() * dtype_bytes


def kv_cache_bytes(config, length: int, *, batch: int = 1, dtype_bytes: int = 4) -> int:
    """Keys and values of every layer for `length` positions (generation keeps them all)."""
    d = Dims.of(config)
    return 2 * d.layers * batch * length * d.kv_heads * d.head_dim * dtype_bytes


def activation_bytes(config, length: int, *, batch: int = 1, dtype_bytes: int = 4,
                     mlp_chunk: int | None = None) -> int:
    """What one decoder layer holds at once in an inference forward pass: the residual stream and its
    normed copy, queries/keys/values and the attention output at full length, the MLP's intermediate
    activations on `mlp_chunk` positions (None: all), the rotary cos/sin tables (float32) and the
    int64 token and position ids."""
    d = Dims.of(config)
    per_token = (3 * d.hidden + (d.heads + 2 * d.kv_heads) * d.head_dim) * dtype_bytes + 2 * d.head_dim * 4 + 2 * 8
    mlp = min(length, mlp_chunk or length) * 2 * d.intermediate * dtype_bytes
    return batch * (length * per_token + mlp)


def logits_bytes(config, positions: int, *, batch: int = 1) -> int:
    """float32 logits of `positions` positions (perplexity and the loss compute them a chunk at a time)."""
    return batch * positions * Dims.of(config).vocab * 4


def forward_bytes(config, length: int, *, batch: int = 1, dtype_bytes: int = 4, kv_cache: bool = False,
                  chunk: int = 1024) -> int:
    """One forward pass beyond the weights and the KV cache: activations and a chunk of logits.
    Perplexity runs the MLPs MLP_CHUNK positions at a time; generation's prefill (`kv_cache`) runs
    them at full length."""
    from .eval.perplexity import MLP_CHUNK
    act = activation_bytes(config, length, batch=batch, dtype_bytes=dtype_bytes, mlp_chunk=None if kv_cache else MLP_CHUNK)
    return act + logits_bytes(config, min(length, chunk), batch=batch)


def inference_bytes(model, length: int, *, batch: int = 1, kv_cache: bool = False, chunk: int = 1024) -> int:
    """A lower bound of the memory one forward pass of a loaded `model` at `length` tokens needs:
    weights, activations, a chunk of logits, and the KV cache when generation keeps one."""
    dtype_bytes = next(model.parameters()).element_size()
    total = weight_bytes(model) + forward_bytes(model.config, length, batch=batch, dtype_bytes=dtype_bytes,
                                                kv_cache=kv_cache, chunk=chunk)
    if kv_cache:
        total += kv_cache_bytes(model.config, length, batch=batch, dtype_bytes=dtype_bytes)
    return total


# -- training ------------------------------------------------------------------------------------
def lora_params(d: Dims, rank: int, targets: str = "all-linear") -> int:
    """Parameters of rank-`rank` adapters (A: in x r, B: r x out) on the target layers of every layer."""
    names = set(d.linears()) if targets.strip() == "all-linear" else {t.strip() for t in targets.split(",")}
    return d.layers * sum(rank * (a + b) for n, (a, b) in d.linears().items() if n in names)


def training_state_bytes(d: Dims, *, gpus: int = 1, sharded: bool = False, lora_rank: int = 0,
                         lora_targets: str = "all-linear", bf16: bool = True) -> dict[str, int]:
    """{weights, gradients, optimizer} per GPU: full fine-tuning (replicated, or sharded over `gpus`
    by FSDP) or LoRA (frozen base replicated, adapters trained)."""
    if lora_rank:
        a = lora_params(d, lora_rank, lora_targets)
        return {"weights": param_bytes(d, 2 if bf16 else 4) + 4 * a, "gradients": 4 * a, "optimizer": 8 * a}
    n = gpus if sharded else 1
    gathered = 2 * 4 * d.layer_params() if sharded and gpus > 1 else 0  # the layer computed + the next, prefetched
    return {"weights": param_bytes(d, 4) // n + gathered, "gradients": param_bytes(d, 4) // n,
            "optimizer": param_bytes(d, 8) // n}


def _layer_token_values(d: Dims) -> int:
    """Values one decoder layer keeps per token for its backward pass: the two norms' outputs, q/k/v,
    the attention output and its projection, the residual after attention, the MLP's gate, up,
    activation and product."""
    return 4 * d.hidden + 2 * d.heads * d.head_dim + 2 * d.kv_heads * d.head_dim + 4 * d.intermediate


def training_activation_bytes(d: Dims, length: int, *, micro_batch: int = 1, resid_bytes: int = 4,
                              act_bytes: int = 2, checkpointing: bool = True, loss_chunk: int = 1024) -> int:
    """Activations of one training micro-batch: the layers' saved inputs (the residual stream, float32
    when the weights are float32 even under autocast) plus one layer recomputed with its gradients
    (with checkpointing; without, every layer's intermediates), plus the loss chunk's logits, log-probs
    and their gradient in float32."""
    tokens = micro_batch * length
    saved = d.layers * tokens * d.hidden * resid_bytes
    one_layer = tokens * _layer_token_values(d) * act_bytes
    layers = 2 * one_layer if checkpointing else d.layers * one_layer + one_layer
    return saved + layers + 3 * logits_bytes(d, min(loss_chunk, length) if loss_chunk else length, batch=micro_batch)


# -- a stage's memory per GPU, and whether it fits -----------------------------------------------
@dataclass
class StageMemory:
    """Per-GPU bytes of one stage, by part, and the engine they assume."""
    parts: dict[str, int]
    engine: str

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        parts = ", ".join(f"{k} {size(v)}" for k, v in self.parts.items() if v)
        return f"~{size(self.total)} per GPU ({self.engine}: {parts})"


def size(n: float) -> str:
    """Bytes as TiB, GiB, MiB or KiB."""
    for unit, scale in (("TiB", 2 ** 40), ("GiB", GiB), ("MiB", 2 ** 20)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n / 1024:,.1f} KiB"


def finetune_memory(d: Dims, length: int, *, gpus: int, micro_batch: int = 1, bf16: bool = True,
                    lora_rank: int = 0, lora_targets: str = "all-linear", checkpointing: bool = True,
                    loss_chunk: int = 1024) -> StageMemory:
    """A fine-tuning stage: LoRA on each GPU, else FSDP over `gpus` (full fine-tuning on one GPU when 1)."""
    sharded = not lora_rank and gpus > 1
    state = training_state_bytes(d, gpus=gpus, sharded=sharded, lora_rank=lora_rank, lora_targets=lora_targets,
                                 bf16=bf16)
    resid = 2 if lora_rank and bf16 else 4
    act = training_activation_bytes(d, length, micro_batch=micro_batch, resid_bytes=resid, act_bytes=2 if bf16 else 4,
                                    checkpointing=checkpointing, loss_chunk=loss_chunk)
    engine = f"LoRA rank {lora_rank}" if lora_rank else (f"FSDP over {gpus} GPUs" if sharded else "one GPU")
    return StageMemory({**state, "activations": act}, engine)


def forward_memory(d: Dims, length: int, *, dtype_bytes: int = 2, descent: bool = False, chunk: int = 1024,
                   kv_cache: bool = False, batch: int = 1) -> StageMemory:
    """A search, perplexity or passkey stage (`kv_cache`): a whole model per process, one sample at a
    time (the search deals samples over processes, never a sequence) or `batch` (compare), estimated
    as check_lengths does. The descent's forward + backward keeps the training activations (the weights take no
    gradient)."""
    act = forward_bytes(d, length, batch=batch, dtype_bytes=dtype_bytes, kv_cache=kv_cache, chunk=chunk)
    if descent:
        act = max(act, training_activation_bytes(d, length, resid_bytes=dtype_bytes, act_bytes=dtype_bytes,
                                                 loss_chunk=chunk))
    parts = {"weights": param_bytes(d, dtype_bytes), "activations": act}
    if kv_cache:
        parts["kv cache"] = kv_cache_bytes(d, length, batch=batch, dtype_bytes=dtype_bytes)
    return StageMemory(parts, "one model per GPU")


def verdict(m: StageMemory, capacity: int, *, trains: bool) -> str | None:
    """None when `m` fits `capacity` bytes; else one line: by how much, and what would fit it."""
    if m.total <= capacity:
        return None
    over = f"needs {size(m.total)} per GPU, more than the {size(capacity)} of one"
    if "kv cache" in m.parts:
        n = math.ceil(m.total / capacity)
        return (f"{over}: the KV cache alone is {size(m.parts['kv cache'])}; it would fit sharded over >= {n} GPUs "
                f"(tensor parallelism, e.g. vLLM -tp {n}), or at a shorter length")
    act = m.parts.get("activations", 0)
    fixed = m.total - act
    if trains and fixed > capacity * 0.9 and act < capacity * 0.5:
        n = next((k for k in (2, 4, 8, 16, 32, 64, 128) if fixed / k + act <= capacity), None)
        return f"{over}: the training state is {size(fixed)}; " + (
            f"FSDP over {n} GPUs would fit it" if n else "no FSDP size up to 128 fits; use LoRA (lora_rank)")
    if fixed >= capacity:
        return f"{over}: the weights alone do not fit; shard them (FSDP, tensor parallelism)"
    n = math.ceil(act / (capacity - fixed))
    how = ("context parallelism (FSDP2 cp_size, `accelerate launch` with parallelism_config) over >= "
           f"{n} GPUs" if trains else f"a sequence split over >= {n} GPUs (not wired into longrope's search and "
           "evaluation), or a shorter length")
    return f"{over}: the activations are {size(act)} at this length; {how} would fit them"


# -- refusing a length the machine cannot hold ---------------------------------------------------
def available_bytes(device) -> int | None:
    """Free memory on `device` now: CUDA's free memory, else the host's available memory (None when
    it cannot be read)."""
    import torch
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_lengths(model, lengths, *, what: str, batch: int = 1, kv_cache: bool = False, chunk: int = 1024,
                  option: str = "--lengths") -> None:
    """Refuse (one line) a length whose inference estimate exceeds the free memory of the model's device."""
    if not lengths:
        return
    device = next(model.parameters()).device
    free = available_bytes(device)
    if free is None:
        return
    longest = max(lengths)
    need = inference_bytes(model, longest, batch=batch, kv_cache=kv_cache, chunk=chunk)
    held = weight_bytes(model)  # already loaded: part of what is in use, not of what is free
    if need - held > free:
        raise LongRopeError(f"{what} at {longest:,} tokens needs at least {size(need)} ({size(held)} of weights "
                            f"plus {size(need - held)} for one forward pass), but {device} has "
                            f"{size(free)} free: choose a shorter {option}")
