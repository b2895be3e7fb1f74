"""Continued pre-training at a longer length with a RoPE scaling applied (`longrope finetune`).

The model is patched with `longrope.apply(model, scaling)` (the rotary module is swapped; its
tables are non-persistent buffers, the parameters are the model's own) and trained on documents
joined with EOS/BOS into `length`-token samples (`train.data`). AdamW, linear warm-up then linear
decay (paper: lr 2e-5), gradient accumulation, gradient checkpointing, optional bf16 autocast, and
the loss in chunks over the sequence (`train.loss`).

A plain run is one process; under `torchrun` or `accelerate launch` (`train.engine`: DDP, FSDP2,
DeepSpeed, with context or sequence parallelism) each process takes its share of every global
batch, so the global batch and the losses are those of the single-process run. The data order is a
function of (seed, step) only, which is what makes resume exact.

The steps, as in `longrope.pretrain`: `_load` (model, tokenizer, samples) -> `_set_up` (engine,
optimizer, schedule, checkpoint) -> `_train` (`_train_step` per optimizer step, `_checkpoint` every
N) -> `_write_output`.

Work folder (`OUT.work` unless told): `log.jsonl` (one line per step) and `checkpoint/` (full
weights as safetensors; optimizer state keyed by parameter name, scheduler and RNG state via
torch.save, read back with weights_only=True; `state.json`), each checkpoint replaced atomically.
The output folder holds the fine-tuned weights (save_pretrained), the tokenizer,
`longrope_scaling.json` (apply it again when using the model, or turn it into a stock config with
`longrope export`), `finetune.json` (with the engine really used) and the loss log.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ..errors import LongRopeError
from ..io import atomic_dir, write_json
from .config import FinetuneConfig, lr_factor
from .data import BatchPlan, short_pieces, training_samples
from .distill import DistillLoss, frozen_copy, pick_pieces
from .toolkit import RunFolder, StepLog, adamw, load_state, load_weights, read_optimizer, save_checkpoint

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from ..rope.scaling import Scaling
    from .engine import Engine

_logger = logging.getLogger(__name__)


@dataclass
class _Loaded:
    """The model (scaling applied), its tokenizer, the samples and the distillation teacher."""
    lm: PreTrainedModel
    tok: PreTrainedTokenizerBase
    scaling: Scaling
    original: int  # the model's pre-trained window
    samples: torch.Tensor  # [n, length]
    teacher: PreTrainedModel | None  # the frozen starting model when distilling
    documents: list[dict]  # the training documents the samples hold, by name and token count


@dataclass
class _Run:
    """What the steps of one fine-tuning run share."""
    cfg: FinetuneConfig
    data: _Loaded
    engine: Engine
    plan: BatchPlan
    model: torch.nn.Module  # the loss module (holding the LM) as the engine wrapped it
    opt: torch.optim.Optimizer
    popt: torch.optim.Optimizer  # the optimizer as the engine wrapped it
    sched: torch.optim.lr_scheduler.LambdaLR
    step: int = 0
    tokens: int = 0
    seconds: float = 0.0


def _check_fingerprint(run: RunFolder, cfg: FinetuneConfig) -> dict:
    """state.json of the checkpoint, refused when it was made with other trajectory settings."""
    state = run.read_state()
    if state.get("config") != cfg.fingerprint():
        changed = sorted(k for k, v in cfg.fingerprint().items() if state.get("config", {}).get(k) != v)
        raise LongRopeError(f"cannot resume: the checkpoint in {run.checkpoint} was made with different "
                            f"{', '.join(changed)}; use the same settings or a new --out/--work")
    return state


# -- the run, step by step ----------------------------------------------------------------------
def _load(cfg: FinetuneConfig) -> _Loaded:
    """The model with the scaling applied, its tokenizer and the training samples."""
    from ..models import check_vocabulary, load_model, load_tokenizer
    from ..patch import apply, rope_dims
    from ..rope.spec import parse_spec

    lm = load_model(cfg.model, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code)
    check_vocabulary(lm, tok := load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code), cfg.model)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise LongRopeError(f"the tokenizer of {cfg.model} has no BOS or EOS token to pack documents with")
    _, _, original = rope_dims(lm)
    scaling = parse_spec(cfg.scaling, default_factor=cfg.length / original)
    teacher = frozen_copy(lm, cfg.bf16) if cfg.distill > 0 else None
    apply(lm, scaling)
    samples, documents = training_samples(cfg, tok)
    return _Loaded(lm, tok, scaling, original, samples, teacher, documents)


def _check_split(cfg: FinetuneConfig, data: _Loaded, engine: Engine) -> None:
    """What a sequence split needs of the run, refused in one line before any training."""
    n = engine.copies_per_sample()
    if data.teacher is not None and engine.sequence is None and n > 1:
        raise LongRopeError("--distill is not wired with context parallelism (cp_size > 1); use --sequence-parallel")
    if engine.sequence is None:
        return
    if (cfg.mixed_window > 0 or data.teacher is not None) and min(data.original, cfg.length) % n:
        raise LongRopeError(f"--sequence-parallel {n} must divide the original window {data.original} "
                            "(--mixed-window and --distill pieces are split too)")
    if data.scaling.switches and cfg.length // n <= data.original:
        raise LongRopeError(f"a scaling with short factors picks them per slice: each slice of "
                            f"{cfg.length // n} tokens must exceed the original window {data.original}")


def _set_up(cfg: FinetuneConfig, data: _Loaded, run: RunFolder, resume: bool,
            log: Callable[[str], None]) -> _Run:
    """Engine, batch plan, optimizer and schedule; on resume the checkpoint's weights and state."""
    from . import engine as engines
    from .loss import CausalLMLoss

    engine = engines.make_engine(cfg.device, fsdp=cfg.fsdp, sequence_parallel=cfg.sequence_parallel)
    _check_split(cfg, data, engine)
    plan = BatchPlan(data.samples, cfg, *engine.data_parallel())
    torch.manual_seed(cfg.seed + engine.acc.process_index)  # dropout, if the model has any
    lm = data.lm
    if cfg.gradient_checkpointing:
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.2x spelling
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.config.use_cache = False
    lm.train()
    state = _check_fingerprint(run, cfg) if resume else None
    if resume:  # every process reads the full weights before the engine shards them
        load_weights(run.checkpoint, lm)
    teacher = data.teacher.to(engine.acc.device) if data.teacher is not None else None
    if engine.sequence is not None:  # the teacher runs on the same split as the student
        for m in (lm, teacher) if teacher is not None else (lm,):
            engine.sequence.attach(m)
    module = CausalLMLoss(lm, cfg.loss_chunk) if teacher is None else DistillLoss(lm, cfg.loss_chunk, teacher)
    made: list[torch.optim.Optimizer] = []

    def make_optimizer() -> torch.optim.Optimizer:
        made.append(adamw(lm, cfg.lr, cfg.weight_decay))
        return made[0]

    model, opt, popt = engines.prepare(engine, module, make_optimizer, micro_batch=cfg.micro_batch,
                                       micros_per_rank=plan.micros_per_rank)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    r = _Run(cfg, data, engine, plan, model, opt, popt, sched)
    if resume:
        r.step, r.tokens, r.seconds = state["step"], state["tokens"], state["seconds"]
        _resume_optimizer(r, run, log)
        load_state(run.checkpoint, scheduler=sched)
    if engine.main:
        run.start(resume, r.step)
    engine.acc.wait_for_everyone()
    return r


def _resume_optimizer(r: _Run, run: RunFolder, log: Callable[[str], None]) -> None:
    """The checkpoint's optimizer state (read on the main process, broadcast shard by shard)."""
    from . import engine as engines

    if r.engine.name.startswith("deepspeed"):
        if r.engine.main:
            log("longrope finetune: note: DeepSpeed keeps its optimizer partitions to itself; AdamW moments restart")
        return
    saved = read_optimizer(run.checkpoint) if r.engine.main else None
    has = [saved is not None]
    if r.engine.acc.num_processes > 1:
        import torch.distributed as dist
        dist.broadcast_object_list(has, src=0)
    if has[0]:
        engines.load_optimizer(r.engine, r.model, r.opt, saved)
    elif r.engine.main:
        log("longrope finetune: note: the checkpoint holds no optimizer state; AdamW moments restart")


def _train_step(r: _Run, bf16: bool) -> tuple[float, int, float]:
    """One optimizer step over this process's micro-batches: (mean micro-batch LM loss, scored tokens,
    mean micro-batch KL to the teacher), summed over all processes."""
    from ..patch import unscaled
    from . import engine as engines
    from .loss import shifted_targets

    cfg, acc, split = r.cfg, r.engine.acc, r.engine.sequence
    # a sequence split scales each slice's loss by the split size: the engines average the gradients
    # over every process, where the slices of one sample must add up
    scale = split.size if split is not None else 1
    local = torch.zeros(3, device=acc.device)  # [sum of micro-batch mean losses, scored tokens, sum of KLs]
    for k, (x, short) in zip(r.plan.my_micros, r.plan.micro_batches(r.step)):
        extra = {}
        if r.data.teacher is not None:
            pieces = pick_pieces(x, r.data.original, cfg.distill_share, cfg.seed, r.step, k).to(acc.device)
            extra = {"short_ids": pieces, "short_pos": _positions(pieces)}
        if short:  # the original rotation for this micro-batch: the patch's modules swapped out and back
            x = short_pieces(x, r.data.original)
        x = x.to(acc.device)
        y = shifted_targets(x)  # shifted before any sequence split, so every slice has its targets
        pos = _positions(x)
        if split is not None:
            x, y, pos = split.local(x), split.local(y), split.local(pos)
            extra = {k2: split.local(v) for k2, v in extra.items()}
        with engines.accumulate(r.engine, r.model), engines.context_parallel(r.engine, x, y, pos), \
                (unscaled(r.data.lm) if short else _nothing()), \
                torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
            nll, count, *kl = r.model(x, targets=y, position_ids=pos, **extra)
            total = split.total(count) if split is not None else count
            loss = nll * scale / total  # every micro-batch has the same weight
            # the KL per position: a slice's sum x N over the N x its own positions of the pieces
            kl = kl[0] / kl[1] if extra else loss.new_zeros(())
            acc.backward(loss + cfg.distill * kl if extra else loss)
        seen = torch.stack([loss.detach().float() / scale, count.float(), kl.detach().float() / scale])
        # under a split every slice adds the group's figures, which the reduce below counts N times
        local += split.total(seen) * seen.new_tensor([1.0, 1.0 / scale, 1.0]) if split is not None else seen
        if acc.sync_gradients:
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(r.model.parameters(), cfg.max_grad_norm)
            r.popt.step()
            r.sched.step()
            r.popt.zero_grad(set_to_none=True)
    total = acc.reduce(local, reduction="sum")
    micros = cfg.batch_size // cfg.micro_batch * r.engine.copies_per_sample()
    return float(total[0]) / micros, int(total[1]), float(total[2]) / micros


def _positions(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(x.shape[1], device=x.device).expand_as(x).contiguous()


def _nothing():
    from contextlib import nullcontext
    return nullcontext()


def _checkpoint(r: _Run, run: RunFolder, seconds: float) -> None:
    """Save a checkpoint (collective: every process takes part in gathering the state)."""
    from . import engine as engines

    r.engine.acc.wait_for_everyone()
    weights = engines.full_weights(r.engine, r.model, r.data.lm)
    optimizer = engines.optimizer_state(r.engine, r.model, r.opt)
    if r.engine.main:
        state = {"step": r.step, "tokens": r.tokens, "seconds": seconds, "config": r.cfg.fingerprint()}
        save_checkpoint(run.checkpoint, weights, state, optimizer=optimizer, scheduler=r.sched)
    r.engine.acc.wait_for_everyone()


def _train(r: _Run, run: RunFolder, progress: bool) -> dict:
    """The steps from `r.step` to the end; returns the last log row."""
    cfg, acc = r.cfg, r.engine.acc
    bf16 = cfg.bf16 and (acc.device.type != "cuda" or torch.cuda.is_bf16_supported())
    steplog = StepLog(run.log, total=cfg.steps, initial=r.step, desc="finetune",
                      show=progress and acc.is_main_process, write=acc.is_main_process)
    t_start = time.time() - r.seconds
    last: dict = {}
    while r.step < cfg.steps:
        lr_used = r.sched.get_last_lr()[0]
        loss_value, count, kl = _train_step(r, bf16)
        r.step += 1
        r.tokens += count
        if not math.isfinite(loss_value):
            raise LongRopeError(f"the loss became {loss_value} at step {r.step}; lower --lr or turn off --bf16")
        last = {"step": r.step, "loss": loss_value, "lr": lr_used, "tokens": r.tokens,
                "seconds": round(time.time() - t_start, 3), **({"kl": kl} if r.data.teacher is not None else {})}
        steplog.step(last, loss_value)
        if cfg.checkpoint_every and r.step % cfg.checkpoint_every == 0 and r.step < cfg.steps:
            _checkpoint(r, run, last["seconds"])
    steplog.close()
    return last


def _summary(r: _Run, last: dict) -> dict:
    """finetune.json: the settings, the engine really used and the run's figures."""
    from . import engine as engines

    cfg, engine = r.cfg, r.engine
    held = torch.tensor([engines.local_parameters(r.model)], device=engine.acc.device)
    return {"command": cfg.command, "config": {k: v for k, v in asdict(cfg).items() if k != "command"},
            "scaling": r.data.scaling.describe(), "original_window": r.data.original,
            "processes": engine.acc.num_processes, "main": engine.main, "engine": engine.describe(),
            "engine_via": engine.via, "sequence_parallel": engine.copies_per_sample(),
            # parameter elements each process held while training: its shards under FSDP / ZeRO-3
            "parameters": sum(p.numel() for p in r.data.lm.parameters()),
            "parameters_per_process": [int(v) for v in engine.acc.gather(held).tolist()],
            "samples": len(r.data.samples), "documents": r.data.documents, "steps": r.step, "tokens_seen": r.tokens,
            "final_loss": last.get("loss"), "seconds": last.get("seconds", r.seconds), "torch": torch.__version__}


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool = True,
             log: Callable[[str], None] | None = None) -> dict:
    """Fine-tune and write the model folder `cfg.out` (main process); returns the run summary.
    `log` takes the run's notes (default: this module's logger, as warnings)."""
    from . import engine as engines

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # the output and work folders were prepared (marker, lock, --overwrite: `io.prepare_output`) by
    # the command before this call; here their paths are laid out and a resume checked, first
    run = RunFolder(cfg.out, cfg.work)
    run.check_resume(resume)
    r = _set_up(cfg, _load(cfg), run, resume, log or _logger.warning)
    last = _train(r, run, progress)
    summary = _summary(r, last)
    r.engine.acc.wait_for_everyone()
    weights = engines.full_weights(r.engine, r.model, r.data.lm)
    if r.engine.main:
        _write_output(run.out, r.data, summary, run.log, weights)
    engines.close(r.engine)
    return summary


def _write_output(out: Path, data: _Loaded, summary: dict, log: Path, weights: dict | None) -> None:
    from dataclasses import replace

    lm, scaling = data.lm, data.scaling
    lm.eval()
    record = replace(scaling, provenance={**scaling.provenance, "finetuned": {
        k: summary["config"][k] for k in ("model", "length", "steps", "lr", "batch_size", "data", "seed",
                                         "mixed_window", "passkey_share", "distill")}})
    with atomic_dir(out, "finetune") as tmp:
        lm.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        data.tok.save_pretrained(tmp)
        record.save(tmp / "longrope_scaling.json")
        write_json(tmp / "finetune.json", summary)
        if log.exists():
            shutil.copyfile(log, tmp / "finetune_log.jsonl")
