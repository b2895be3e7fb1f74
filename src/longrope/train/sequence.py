"""Sequence parallelism for long fine-tuning (`finetune --sequence-parallel N`): DeepSpeed-Ulysses.

Each group of N processes trains on the same samples, each process on a contiguous 1/N slice of
every sequence. Outside attention every token is independent (embeddings, MLPs, norms, the LM
head and loss), so each process runs its slice alone; inside attention DeepSpeed's
`UlyssesSPAttentionHF` (ALST, the maintained Ulysses implementation) exchanges heads for sequence
with one all_to_all, so every process attends over the whole sequence for 1/N of the heads, then
exchanges back. Activation memory per process is 1/N of the sequence's; the attention kernel is
the model's own (sdpa, or flash attention on GPUs). It needs `num_attention_heads` divisible by N
(and the KV heads divisible by N, or N by them).

DeepSpeed's own entry (`register_with_transformers`, which accelerate's `sp_size` calls) replaces
the core attention for every model of the process and fixes the batch shape at registration;
fine-tuning also runs the original-window pieces of `--mixed-window` and `--distill` (other batch
shapes) and the teacher. So longrope registers one attention function of its own
(`longrope_ulysses`) on the student and the teacher, which calls an `UlyssesSPAttentionHF` built for
the batch size at hand over DeepSpeed's sequence-parallel groups. The teacher thus runs on the same
split as the student. The loss: each process sums the NLL of its slice; the token count is summed
over the group; the local loss is scaled by N because the data-parallel engines (DDP, FSDP) average
gradients over all N x D processes, where the slices of one sample must add up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import LongRopeError

NAME = "longrope_ulysses"
_ACTIVE: list = []  # the SequenceSplit in use (one per process)


@dataclass
class SequenceSplit:
    """This process's place in its sequence-parallel group."""
    size: int
    rank: int  # within the group: which slice
    data_rank: int  # the group's index among the data-parallel replicas
    data_size: int
    group: object = None  # torch.distributed ProcessGroup of the slices of one sample
    _core: object = None  # the model's own attention function, called inside the exchange
    _shape: tuple[int, int, int, int] = (0, 0, 0, 0)  # heads, head size, KV heads, layers
    _attn: dict = field(default_factory=dict)  # batch size -> UlyssesSPAttentionHF

    @classmethod
    def join(cls, size: int) -> SequenceSplit:
        """The groups of `size` consecutive ranks (DeepSpeed's sequence-parallel groups)."""
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_initialized() else 1
        if world % size or world < size:
            raise LongRopeError(f"--sequence-parallel {size} does not divide the {world} processes launched")
        try:
            import deepspeed.comm as ds_comm
            import deepspeed.runtime.sequence_parallel.parallel_state_sp as mpu
        except ImportError:
            raise LongRopeError("--sequence-parallel needs DeepSpeed: pip install 'longrope[deepspeed]'") from None
        ds_comm.init_distributed(dist_backend=dist.get_backend())
        if mpu._SEQUENCE_PARALLEL_GROUP is None:  # a recipe's later stage finds them made
            mpu.initialize_sequence_parallel(size)
        elif mpu.get_sequence_parallel_world_size() != size:
            raise LongRopeError("--sequence-parallel differs from an earlier stage of this process")
        split = cls(size, mpu.get_sequence_parallel_rank(), dist.get_rank() // size, world // size,
                    mpu.get_sequence_parallel_group())
        _ACTIVE[:] = [split]
        return split

    # -- the model side --------------------------------------------------------------------------
    def attach(self, model) -> None:
        """Route `model`'s attention through the Ulysses exchange (its own kernel inside)."""
        from transformers import AttentionInterface

        cfg = model.config.get_text_config()
        core = model.config._attn_implementation
        if core == NAME:
            return
        if core == "eager" or core not in AttentionInterface._global_mapping:
            raise LongRopeError(f"--sequence-parallel needs sdpa or flash attention, not {core!r}")
        if cfg.num_attention_heads % self.size or not (cfg.num_key_value_heads % self.size == 0
                                                        or self.size % cfg.num_key_value_heads == 0):
            raise LongRopeError(f"--sequence-parallel {self.size} must divide the model's {cfg.num_attention_heads} "
                                f"attention heads and {cfg.num_key_value_heads} KV heads (or be a multiple of them)")
        self._core = AttentionInterface._global_mapping[core]
        self._shape = (cfg.num_attention_heads, getattr(cfg, "head_dim", None) or
                       cfg.hidden_size // cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers)
        AttentionInterface.register(NAME, _attention)
        model.set_attn_implementation(NAME)

    def _ulysses(self, batch: int):
        if batch not in self._attn:
            from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

            heads, head_dim, kv_heads, layers = self._shape
            self._attn[batch] = UlyssesSPAttentionHF(
                attn=self._core, batch_size=batch, attn_head_count=heads, attn_head_size=head_dim,
                kv_head_count=kv_heads, num_hidden_layers=layers, process_group=self.group,
                seq_length_is_variable=True)
        return self._attn[batch]

    # -- the data side ---------------------------------------------------------------------------
    def local(self, t: torch.Tensor) -> torch.Tensor:
        """This process's slice of `t` [batch, seq, ...] along the sequence."""
        n = t.shape[1]
        if n % self.size:
            raise LongRopeError(f"a sequence of {n} tokens cannot be split over {self.size} processes")
        w = n // self.size
        return t[:, self.rank * w:(self.rank + 1) * w].contiguous()

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the group (no gradient)."""
        import torch.distributed as dist

        out = t.detach().clone()
        dist.all_reduce(out, group=self.group)
        return out


def _attention(module, query, key, value, attention_mask, *args, **kwargs):
    """transformers' attention interface -> Ulysses over the active split. The mask is dropped, as
    DeepSpeed's own wrapper does: a local-slice mask is wrong after the exchange, and the kernel
    applies causality itself (position ids come along for flash attention)."""
    return _ACTIVE[0]._ulysses(query.shape[0])(module, query, key, value, None, *args, **kwargs)
