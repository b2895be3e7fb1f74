"""The distributed engine behind `longrope finetune`, chosen from the launcher's environment and the run's
options, and recorded as the engine really used.

| engine (`finetune.json`) | how it is asked for | what runs |
|---|---|---|
| `single` | a plain run | one process |
| `ddp` | `torchrun`, or `accelerate launch` with a DDP / MULTI_CPU config | accelerate's DDP (gloo on CPU, NCCL on GPU) |
| `fsdp2` via accelerate | `accelerate launch` with an FSDP config, on GPUs | accelerate's FSDP2 (`fully_shard` per decoder layer) |
| `fsdp2` via torch | `--fsdp`, or an accelerate FSDP config on CPU | `torch.distributed.fsdp.fully_shard` called here |
| `deepspeed-zeroN` | `accelerate launch` with a DeepSpeed config, on GPUs | DeepSpeed ZeRO through accelerate |
| `+cp` | an FSDP2 config with `parallelism_config` `cp_size` > 1, on CUDA | torch context parallelism (flash / efficient SDPA only) |
| `+sp` | `--sequence-parallel N` | DeepSpeed's Ulysses attention (`train.sequence`) |

accelerate drops FSDP, DeepSpeed and `cp_size` on CPU without a word (it runs DDP). So the request is
read from accelerate's own launch variables and compared with what accelerate gave: an FSDP2
request it dropped is carried out here with `fully_shard` (same units: one per decoder layer, then
the root); any other request that would fall back (DeepSpeed or context parallelism on CPU, FSDP1)
is refused in one line.

Checkpoints hold full (gathered) state dicts whatever the engine: the weights, and the optimizer's
state keyed by parameter name (`torch.distributed.checkpoint.state_dict`), so a checkpoint written
by 2 FSDP processes resumes in 1 process or under DDP and the other way round. Rank 0 holds the
gathered state (in CPU memory); on resume it reads the optimizer state and broadcasts each shard.
Under DeepSpeed the weights are gathered by DeepSpeed (16-bit with `zero3_save_16bit_model`) and
the optimizer state is not saved (AdamW's moments restart on resume, with a note).
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import LongRopeError


def require_accelerate() -> None:
    """Fail before any work when accelerate (the `dist` extra, the engine of every fine-tune) is missing."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise LongRopeError("fine-tuning needs accelerate: pip install 'longrope[dist]'") from None


if TYPE_CHECKING:
    from accelerate import Accelerator

    from .sequence import SequenceSplit


@dataclass
class Engine:
    """The accelerator, the engine it runs (`name`, `via`) and the sequence split, if any."""
    acc: Accelerator
    name: str  # single, ddp, fsdp2, fsdp1, deepspeed-zero3, ... (+cp, +sp)
    via: str  # "accelerate", or "torch" where fully_shard is called here
    layers: tuple[str, ...] = ()  # decoder-layer class names sharded as units (fsdp2 via torch)
    reshard: bool = True  # FSDP2 reshard_after_forward
    sequence: SequenceSplit | None = None
    owns_group: bool = True  # whether this run joined the process group (and leaves it at the end)
    notes: list[str] = field(default_factory=list)

    @property
    def main(self) -> bool:
        return self.acc.is_main_process

    @property
    def sharded(self) -> bool:
        return self.name.startswith(("fsdp", "deepspeed"))

    def data_parallel(self) -> tuple[int, int]:
        """(rank, size) along the data-parallel dimension: the processes that split one sequence
        (context or sequence parallelism) share a rank, since they train on the same samples."""
        if self.sequence is not None:
            return self.sequence.data_rank, self.sequence.data_size
        pc = self.acc.parallelism_config
        if pc is None or not pc.cp_enabled:
            return self.acc.process_index, self.acc.num_processes
        mesh, rank = self.acc.torch_device_mesh, 0
        for name in pc.dp_dim_names:
            rank = rank * mesh[name].size() + mesh[name].get_local_rank()
        return rank, pc.data_parallel_size

    def copies_per_sample(self) -> int:
        """How many processes score a slice of each sample (cp or sp size, else 1)."""
        if self.sequence is not None:
            return self.sequence.size
        pc = self.acc.parallelism_config
        return pc.cp_size if pc is not None and pc.cp_enabled else 1

    def describe(self) -> str:
        return self.name + (f"+sp{self.sequence.size}" if self.sequence is not None else "")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() == "true"


def _requested_split(name: str) -> int:
    """accelerate's parallelism_config `cp_size` / `sp_size` as its launcher passes it."""
    return int(os.environ.get(f"PARALLELISM_CONFIG_{name.upper()}_SIZE", "1") or 1)


def make_engine(device: str, *, fsdp: bool = False, sequence_parallel: int = 1) -> Engine:
    """The engine for `device` ('cpu' or 'cuda') from the launcher's environment and the run's
    options; a request that cannot be carried out as asked is one line."""
    import torch.distributed as dist
    from accelerate import Accelerator, DistributedType

    if device == "cuda" and not torch.cuda.is_available():
        raise LongRopeError("--device cuda, but torch sees no CUDA device")
    owns_group = not (dist.is_available() and dist.is_initialized())  # a recipe may hold it already
    acc = Accelerator(cpu=device == "cpu")
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    if launched != acc.num_processes:
        raise LongRopeError(f"the launcher started {launched} processes but accelerate joined "
                            f"{acc.num_processes}; check the accelerate config (use_cpu, distributed_type)")
    pc, kind = acc.parallelism_config, acc.distributed_type
    if (pc is not None and pc.tp_size > 1) or _requested_split("tp") > 1:
        raise LongRopeError("tensor parallelism (tp_size) is not wired into `longrope finetune`")
    if (pc is not None and pc.sp_size > 1) or _requested_split("sp") > 1:
        raise LongRopeError("accelerate's parallelism_config sp_size is not used by `longrope finetune`: pass "
                            "--sequence-parallel N instead (DeepSpeed's Ulysses attention, set up by longrope)")
    cp = max(pc.cp_size if pc is not None else 1, _requested_split("cp"))
    if cp > 1 and kind != DistributedType.FSDP:
        raise LongRopeError(f"context parallelism (cp_size {cp}) runs only on CUDA with FSDP2 (flash / efficient "
                            f"SDPA kernels) and accelerate would run {kind.value} instead; on CPU use "
                            "--sequence-parallel")
    if cp > 1 and sequence_parallel > 1:
        raise LongRopeError("use either context parallelism (cp_size) or --sequence-parallel, not both")
    want_ds = _env_true("ACCELERATE_USE_DEEPSPEED")
    if want_ds and kind != DistributedType.DEEPSPEED:
        raise LongRopeError(f"the accelerate config asks for DeepSpeed, which runs on GPUs only; accelerate would "
                            f"run {kind.value} instead. On CPU use the FSDP config or --fsdp")
    if fsdp and kind == DistributedType.DEEPSPEED:
        raise LongRopeError("--fsdp with a DeepSpeed accelerate config: choose one engine")
    engine = Engine(acc, _accelerate_name(acc), "accelerate", owns_group=owns_group)
    if _env_true("ACCELERATE_USE_FSDP") and kind != DistributedType.FSDP:
        engine = _direct_fsdp(acc, from_config=True, owns_group=owns_group)
    elif fsdp and kind != DistributedType.FSDP:
        engine = _direct_fsdp(acc, from_config=False, owns_group=owns_group)
    if sequence_parallel > 1:
        from .sequence import SequenceSplit
        engine.sequence = SequenceSplit.join(sequence_parallel)
    return engine


def _accelerate_name(acc) -> str:
    from accelerate import DistributedType

    kind = acc.distributed_type
    if kind == DistributedType.NO:
        return "single"
    if kind == DistributedType.FSDP:
        pc = acc.parallelism_config
        return f"fsdp{acc.state.fsdp_plugin.fsdp_version}" + ("+cp" if pc is not None and pc.cp_enabled else "")
    if kind == DistributedType.DEEPSPEED:
        return f"deepspeed-zero{acc.state.deepspeed_plugin.zero_stage}"
    return "ddp"


def _direct_fsdp(acc, *, from_config: bool, owns_group: bool) -> Engine:
    """FSDP2 with `fully_shard` called here: the accelerate config's unit and reshard settings when
    it asked for FSDP, else one unit per decoder layer (the model's `_no_split_modules`)."""
    if acc.num_processes < 2:
        raise LongRopeError("FSDP shards over several processes: launch with torchrun or accelerate launch")
    layers, reshard = (), True
    if from_config:
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()  # accelerate's own reading of its launch variables
        if plugin.fsdp_version != 2:
            raise LongRopeError(f"the accelerate config asks for FSDP version {plugin.fsdp_version}, which accelerate "
                                "runs only on GPUs; on CPU longrope shards with FSDP2: set fsdp_version: 2")
        layers = tuple(plugin.transformer_cls_names_to_wrap or ())
        reshard = bool(plugin.reshard_after_forward)
    return Engine(acc, "fsdp2", "torch", layers=layers, reshard=reshard, owns_group=owns_group)


# -- preparing the model and optimizer ---------------------------------------------------------------
def prepare(engine: Engine, module: torch.nn.Module, make_optimizer, *, micro_batch: int, micros_per_rank: int):
    """(model, optimizer, optimizer as the engine wraps it) for `module` (a loss module holding `.lm`).
    `make_optimizer()` builds the optimizer over `module.lm`: after sharding under FSDP2 via torch, whose
    parameters are then DTensors."""
    from accelerate import DistributedType

    acc = engine.acc
    acc.gradient_accumulation_steps = micros_per_rank
    if engine.via == "torch":
        from torch.distributed.fsdp import fully_shard

        names = set(engine.layers or getattr(module.lm, "_no_split_modules", None) or ())
        units = [m for m in module.modules() if type(m).__name__ in names]
        if not units:
            raise LongRopeError(f"FSDP: no module of class {', '.join(sorted(names)) or '?'} in the model to shard "
                                "as a unit; set fsdp_transformer_cls_to_wrap to its decoder layer class")
        for unit in units:
            fully_shard(unit, reshard_after_forward=engine.reshard)
        fully_shard(module, reshard_after_forward=engine.reshard)
        opt = make_optimizer()
        return module, opt, opt
    opt = make_optimizer()
    if acc.distributed_type == DistributedType.DEEPSPEED:  # no DataLoader is prepared: tell DeepSpeed
        ds = acc.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = micro_batch
        ds["gradient_accumulation_steps"] = micros_per_rank
    model, popt = acc.prepare(module, opt)
    return model, opt, popt


@contextmanager
def accumulate(engine: Engine, model):
    """One micro-batch: gradients synchronised only on the last one of the step."""
    with engine.acc.accumulate(model):
        if engine.via == "torch":  # accelerate handles its own FSDP2; this one is ours
            model.set_requires_gradient_sync(engine.acc.sync_gradients)
        yield


def context_parallel(engine: Engine, *buffers: torch.Tensor):
    """Shard `buffers` ([batch, seq] each) along the sequence over the context-parallel group for the
    forward and backward inside; a no-op without context parallelism."""
    if engine.sequence is not None or engine.copies_per_sample() == 1:
        return nullcontext()
    return engine.acc.maybe_context_parallel(buffers=list(buffers), buffer_seq_dims=[1] * len(buffers),
                                             no_restore_buffers=set(buffers))


def local_parameters(model) -> int:
    """Parameter elements this process holds (its shards under FSDP, everything otherwise)."""
    def held(p) -> int:
        if hasattr(p, "ds_tensor"):  # a DeepSpeed ZeRO-3 partition
            return p.ds_tensor.numel()
        return (p.to_local() if hasattr(p, "to_local") else p).numel()

    return sum(held(p) for p in model.parameters())


# -- gathered state for checkpoints and the output -------------------------------------------------
def _uses_dcp(engine: Engine) -> bool:
    return not engine.name.startswith("deepspeed")


def full_weights(engine: Engine, model, lm) -> dict | None:
    """The LM's full state dict on the main process (None elsewhere); collective under sharding."""
    if not engine.sharded:
        return lm.state_dict() if engine.main else None
    if not _uses_dcp(engine):
        sd = engine.acc.get_state_dict(model)
    else:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix("lm."): v for k, v in sd.items()} if engine.main else None


def optimizer_state(engine: Engine, model, opt) -> dict | None:
    """The optimizer's full state keyed by parameter name on the main process; None elsewhere and
    under DeepSpeed (its partitions stay inside its engine). Collective."""
    if not _uses_dcp(engine):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    module = model if engine.via == "torch" or engine.sharded else engine.acc.unwrap_model(model)
    osd = get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return osd if engine.main else None


def load_optimizer(engine: Engine, model, opt, state: dict | None) -> None:
    """`state` (read on the main process; None elsewhere) into the optimizer, shards broadcast."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    module = model if engine.via == "torch" or engine.sharded else engine.acc.unwrap_model(model)
    broadcast = engine.acc.num_processes > 1
    set_optimizer_state_dict(module, opt, state if engine.main or not broadcast else {},
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast))


def close(engine: Engine) -> None:
    """The end of the run: the process group left only by the run that joined it (a recipe keeps it
    for its next stage)."""
    engine.acc.wait_for_everyone()
    if engine.owns_group:
        engine.acc.end_training()
    settle(engine.acc)


def settle(acc, seconds: float = 0.2) -> None:
    """Let gloo's worker threads drop their last finished work before the DDP wrapper is freed.

    Freeing the wrapper frees its Reducer and with it the process group, whose destructor joins the
    worker threads while holding the GIL; a worker still dropping the last barrier's work needs the
    GIL to release its tensors, so both wait forever (seen under load: py-spy shows the main thread
    in ~ProcessGroupGloo -> thread::join and a worker in ~AsyncWork -> gil_scoped_acquire). A short
    GIL-free wait after the last collective lets the workers finish first."""
    if acc.num_processes > 1:
        import time
        time.sleep(seconds)
