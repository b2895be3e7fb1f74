"""The process group of a run launched with `torchrun` or `accelerate launch`, held by its outermost owner.

`longrope extend` runs several stages in one process; under a launcher they share one process group:
the recipe joins it before the first stage and leaves it after the last, and a stage that finds a group
already joined (search, finetune) uses it and leaves it alone. Files are written by rank 0 only; the
other ranks wait for it (`wait`) and take rank 0's decisions (`agree`), so every rank sees the same
folder state whatever the timing. A plain run is rank 0 of 1 and every call here is free.

The shared folder (DIR) must be the same for all ranks (one machine, or a shared file system): a stage
reads what rank 0 wrote in the stage before it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

# ranks wait for rank 0 through whole stages it runs alone (export, compare): the group's timeout,
# which bounds every wait, is set long enough for a compare at long lengths
WAIT = timedelta(hours=6)


@dataclass
class Group:
    rank: int = 0
    world: int = 1
    owned: bool = False  # joined here, so left here

    @classmethod
    def join(cls, cuda: bool) -> Group:
        """The launcher's group (gloo, and NCCL too when `cuda`), joined unless it already is."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch
        import torch.distributed as dist

        owned = not dist.is_initialized()
        if owned:
            if cuda:
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=WAIT)
        return cls(dist.get_rank(), dist.get_world_size(), owned)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def agree(self, value):
        """Rank 0's `value` on every rank (a JSON-like object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wait(self) -> None:
        """Every rank here before any goes on (after rank 0 wrote something the others read)."""
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def leave(self) -> None:
        if self.world > 1 and self.owned:
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()
