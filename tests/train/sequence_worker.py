"""Run by test_sequence.py under `torchrun --nproc-per-node 2`: the built-in model on one sequence, first
whole on every process, then split over the 2 processes (DeepSpeed-Ulysses attention through
`longrope.train.sequence`). Each process writes what it measured to OUT/rank{r}.json."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from longrope.models import load_model
from longrope.patch import apply
from longrope.train.loss import CausalLMLoss, shifted_targets
from longrope.train.sequence import SequenceSplit


def main(out: Path, length: int) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    lm = load_model("builtin", dtype="float32", device="cpu")
    apply(lm, "yarn:2")  # the rotary patch sees each slice's own positions
    lm.train()
    module = CausalLMLoss(lm, chunk=64)
    x = torch.randint(3, lm.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    y, pos = shifted_targets(x), torch.arange(length).expand_as(x).contiguous()

    whole_hidden = lm.get_decoder()(input_ids=x, position_ids=pos).last_hidden_state.detach()
    nll, count = module(x, targets=y, position_ids=pos)
    (nll / count).backward()
    whole_grads = {n: p.grad.clone() for n, p in lm.named_parameters()}
    lm.zero_grad(set_to_none=True)

    split = SequenceSplit.join(2)
    split.attach(lm)
    xs, ys, ps = split.local(x), split.local(y), split.local(pos)
    hidden = lm.get_decoder()(input_ids=xs, position_ids=ps).last_hidden_state.detach()
    nll_s, count_s = module(xs, targets=ys, position_ids=ps)
    total = split.total(count_s)
    (nll_s * split.size / total).backward()  # as finetune does: the engines then average over processes
    grad_err = 0.0
    for n, p in lm.named_parameters():
        g = p.grad.clone()
        dist.all_reduce(g)
        g /= dist.get_world_size()
        grad_err = max(grad_err, float((g - whole_grads[n]).abs().max() / whole_grads[n].abs().max().clamp_min(1e-12)))
    mine = whole_hidden[:, split.rank * (length // 2):(split.rank + 1) * (length // 2)]
    result = {"rank": split.rank, "attn": lm.config._attn_implementation,
              "hidden_err": float((hidden - mine).abs().max()), "hidden_scale": float(mine.abs().max()),
              "loss_whole": float(nll / count), "loss_split": float(split.total(nll_s) / total),
              "count": int(total), "count_whole": int(count), "grad_rel_err": grad_err}
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
