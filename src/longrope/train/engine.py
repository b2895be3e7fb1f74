"""The distributed engine behind `longrope finetune`: accelerate, set up from the launcher's environment.

A plain run is one process. `torchrun` gives DDP (gloo on CPU, NCCL on GPU); `accelerate launch
--config_file` gives what the config says: DDP, FSDP (1 or 2), DeepSpeed ZeRO, and with FSDP2 a
`parallelism_config` whose `cp_size` turns on PyTorch context parallelism (the sequence split over
`cp_size` processes; ring attention inside SDPA). Everything here reads the engine's own state: no
environment variables of ours.
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from ..errors import LongRopeError


def require_accelerate() -> None:
    """Fail before any work when accelerate (the `dist` extra, the engine of every fine-tune) is missing."""
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise LongRopeError("fine-tuning needs accelerate: pip install 'longrope[dist]'") from None


def make_accelerator(device: str):
    """An `Accelerator` for `device` ('cpu' or 'cuda'), checked against the launcher's WORLD_SIZE."""
    from accelerate import Accelerator

    from ..models import use_tensor_cores

    if device == "cuda" and not torch.cuda.is_available():
        raise LongRopeError("--device cuda, but torch sees no CUDA device")
    use_tensor_cores(device)
    acc = Accelerator(cpu=device == "cpu")
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    if launched != acc.num_processes:
        raise LongRopeError(f"the launcher started {launched} processes but accelerate joined "
                            f"{acc.num_processes}; check the accelerate config (use_cpu, distributed_type)")
    pc = acc.parallelism_config
    if pc is not None and (pc.tp_size > 1 or pc.sp_size > 1):
        raise LongRopeError("tensor and DeepSpeed-Ulysses sequence parallelism are not wired into "
                            "`longrope finetune`; use FSDP2 with parallelism_config cp_size for long sequences")
    return acc


def data_parallel_rank(acc) -> tuple[int, int]:
    """(rank, size) along the data-parallel dimensions: the processes of one context-parallel group
    share a rank, since they train on the same samples (each on a slice of the sequence)."""
    pc = acc.parallelism_config
    if pc is None or not pc.cp_enabled:
        return acc.process_index, acc.num_processes
    mesh, rank = acc.torch_device_mesh, 0
    for name in pc.dp_dim_names:
        rank = rank * mesh[name].size() + mesh[name].get_local_rank()
    return rank, pc.data_parallel_size


def copies_per_sample(acc) -> int:
    """How many processes score a slice of each sample (the context-parallel size, else 1)."""
    pc = acc.parallelism_config
    return pc.cp_size if pc is not None and pc.cp_enabled else 1


def context_parallel(acc, *buffers: torch.Tensor):
    """Shard `buffers` ([batch, seq] each) along the sequence over the context-parallel group for the
    forward and backward inside; a no-op without context parallelism."""
    if copies_per_sample(acc) == 1:
        return nullcontext()
    return acc.maybe_context_parallel(buffers=list(buffers), buffer_seq_dims=[1] * len(buffers),
                                      no_restore_buffers=set(buffers))


def sharded(acc) -> bool:
    from accelerate import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def prepare(acc, module, opt, micro_batch: int):
    from accelerate import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:  # no DataLoader is prepared: tell DeepSpeed
        acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = micro_batch
    return acc.prepare(module, opt)


def full_weights(acc, model) -> dict:
    """The full (gathered) state dict of the LM under FSDP / DeepSpeed ZeRO-3; call on every process."""
    return {k.removeprefix("lm."): v for k, v in acc.get_state_dict(model).items()}


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
