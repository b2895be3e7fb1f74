"""`longrope eval ppl|passkey|tasks`: perplexity, passkey retrieval and lm-evaluation-harness tasks
of a model with a RoPE scaling applied."""
from __future__ import annotations

import sys

from ..errors import LongRopeError
from ..eval.compare import CompareConfig
from ..schema import nonnegative_int, positive_int
from ._common import add_data_args, add_model_args, int_list


def _scaling_help() -> str:
    from ..rope.registry import spellings
    return (f"RoPE scaling: model (default: the model as loaded, with its own config scaling), {spellings()} "
            "(none: the unscaled rotation); a bare name takes the longest length / original window as its factor")


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a (scaled) model: perplexity, passkey retrieval, harness tasks",
                       description="Evaluate a model with a RoPE scaling applied.")
    ev = p.add_subparsers(dest="eval_command", metavar="EVAL")
    p.set_defaults(func=lambda args: _missing(p))

    q = ev.add_parser("ppl", help="perplexity per length (truncate or sliding window)",
                      description="Perplexity of the first L tokens of K documents (truncate, one forward "
                                  "pass each, BOS first) or over sliding windows of L tokens (--stride).")
    _common(q)
    add_data_args(q, split="test")
    q.add_argument("--lengths", required=True, help="evaluation lengths, e.g. 256,512,1k,2k")
    q.add_argument("--docs", type=positive_int, default=CompareConfig.docs,
                   help=f"documents per length (default {CompareConfig.docs}, as in compare)")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--truncate", action="store_true", help="one forward pass per document (default)")
    mode.add_argument("--stride", type=positive_int, help="sliding window of L tokens moved by this stride")
    q.add_argument("--span", type=positive_int, default=None,
                   help="tokens per document scored with --stride (default 2 x length)")
    q.add_argument("--batch-size", type=positive_int, default=1, help="samples per forward pass (default 1)")
    q.add_argument("--chunk", type=positive_int, default=1024, help="positions per LM-head/loss chunk (default 1024)")
    q.add_argument("--positions", default=None,
                   help="also report ppl of target-position ranges, e.g. 0-256,1024-2048")
    q.set_defaults(func=run_ppl)

    k = ev.add_parser("passkey", help="passkey retrieval accuracy per length and depth",
                      description="Greedy decoding (KV cache) of passkey prompts in the papers' format; "
                                  "the answer is the first integer generated.")
    _common(k)
    k.add_argument("--lengths", required=True, help="prompt lengths in tokens, e.g. 256,1k,2k")
    k.add_argument("--trials", type=positive_int, default=5, help="prompts per length and depth (default 5)")
    k.add_argument("--depths", default=None, help="key depths in [0,1] (default 0,0.25,0.5,0.75,1)")
    k.add_argument("--max-new-tokens", type=positive_int, default=8, help="tokens generated per prompt (default 8)")
    k.set_defaults(func=run_passkey)

    t = ev.add_parser("tasks", help="lm-evaluation-harness tasks on the patched model (needs longrope[eval])",
                      description="Run lm-evaluation-harness in-process on the model with the scaling applied, "
                                  "offline. With --lengths: RULER tasks generated locally at each length "
                                  "(offline ones: niah_single_1, niah_multikey_2, niah_multikey_3, ruler_vt, "
                                  "ruler_cwe, ruler_fwe); without: any task whose data is already cached.")
    _common(t)
    t.add_argument("--tasks", required=True, help="comma-separated harness task names, e.g. niah_single_1,ruler_vt")
    t.add_argument("--lengths", default=None, help="RULER lengths in tokens (prompt + generation), e.g. 256,512,1k")
    t.add_argument("--num-fewshot", type=nonnegative_int, default=None, help="few-shot examples (default: the task's)")
    t.add_argument("--limit", type=float, default=None,
                   help="samples per task (and per length) or a fraction, for a quick run")
    t.add_argument("--batch-size", type=positive_int, default=1, help="harness batch size (default 1)")
    t.add_argument("--allow-downloads", action="store_true",
                   help="let the harness fetch task data (off: the run is offline and such tasks are refused)")
    t.set_defaults(func=run_tasks)


def _missing(p) -> int:
    p.print_help(sys.stderr)
    return 2


def _common(p) -> None:
    add_model_args(p)
    p.add_argument("--scaling", default="model", help=_scaling_help())
    p.add_argument("--factor", type=float, default=None, help="factor for a bare --scaling name")
    p.add_argument("--seed", type=int, default=0, help="seed of sample selection / passkeys (default 0)")
    p.add_argument("--out", default=None, help="write the results as JSON here (checked before the work)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _load_scaled(args, lengths, *, what: str, held: list[int] | None = None, kv_cache: bool = False, batch: int = 1):
    """The model and tokenizer with --scaling applied (a bare name's factor from `lengths`), after the
    checks: --out can be written, and the longest sequence (`held`, default `lengths`) fits in memory."""
    from .. import patch
    from ..eval.compare import default_factor
    from ..io import check_file_output
    from ..memory import check_lengths
    from ._common import load_model_from_args

    if args.out:
        check_file_output(args.out, overwrite=args.overwrite)
    model, tok = load_model_from_args(args)
    check_lengths(model, held or lengths, what=what, kv_cache=kv_cache, batch=batch, chunk=getattr(args, "chunk", 1024))
    if args.scaling.strip() == "model":  # no patch: the rotation the model's config asks for
        return model, tok, None
    fac = default_factor(model, lengths or [1], args.factor)
    patch.apply(model, args.scaling, default_factor=fac)
    return model, tok, patch.current(model)


def _positions(text: str | None):
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            out.append((int(a), int(b)))
        except ValueError:
            raise LongRopeError(f"bad position range {part!r}; use START-END, e.g. 0-256") from None
        if not sep:
            raise LongRopeError(f"bad position range {part!r}; use START-END, e.g. 0-256")
        if not 0 <= out[-1][0] < out[-1][1]:
            raise LongRopeError(f"bad position range {part!r}: need 0 <= START < END")
    return out


def _meta(args, scaling, model) -> dict:
    from ..eval.compare import describe_model_scaling
    own = describe_model_scaling(model)
    return {"model": args.model, "scaling": scaling.describe() if scaling is not None else own,
            "dtype": args.dtype, "seed": args.seed}


def run_ppl(args) -> int:
    from ..data import load_tokenized
    from ..eval.compare import make_samples
    from ..eval.perplexity import perplexity
    from ..io import write_json

    lengths = int_list(args.lengths)
    positions = _positions(args.positions)
    spans = {n: (args.span or 2 * n) if args.stride else n for n in lengths}
    for n in lengths:
        if args.stride and (args.stride > n or spans[n] < n):
            raise LongRopeError(f"with --stride, need stride <= length <= span (got {args.stride}, {n}, {spans[n]})")
    model, tok, scaling = _load_scaled(args, lengths, what="eval ppl", held=list(spans.values()), batch=args.batch_size)
    documents = load_tokenized(tok, args.data, args.split)
    base = make_samples(documents.ids, tok, max(spans.values()), args.docs, seed=args.seed,  # same docs at every length
                        source=args.data, split=args.split)
    samples = {n: [t[:spans[n]] for t in base.tensors] for n in lengths}
    results = {}
    print(f"scaling: {_meta(args, scaling, model)['scaling']}")
    print(f"{'length':>8} {'ppl':>10} {'docs':>5} {'tokens':>9} {'seconds':>8}")
    for n in lengths:
        r = perplexity(model, samples[n], stride=args.stride, window=n if args.stride else None,
                       batch_size=args.batch_size, chunk=args.chunk, progress=True, positions=positions)
        results[str(n)] = {**r.to_dict(), "sample_mode": base.mode}
        print(f"{n:>8} {r.ppl:>10.4f} {r.docs:>5} {r.tokens:>9} {r.seconds:>8.1f}", flush=True)
        for rng, v in r.by_range.items():
            ppl = "-" if v["ppl"] is None else f"{v['ppl']:.4f}"
            print(f"{'':>8}   positions {rng}: ppl {ppl} ({v['tokens']} tokens)")
    if args.out:
        meta = {**_meta(args, scaling, model), "data": args.data or "builtin", "split": args.split,
                "mode": "truncate" if args.stride is None else f"sliding window, stride {args.stride}",
                "docs": args.docs, "documents": documents.cite(base.used)}
        write_json(args.out, {"ppl": results, "meta": meta})
        print(f"wrote {args.out}")
    return 0


def run_passkey(args) -> int:
    from ..eval.passkey import passkey_eval
    from ..eval.report import length_table
    from ..io import write_json
    from ..schema import parse_floats as float_list

    lengths = int_list(args.lengths)
    depths = float_list(args.depths) if args.depths is not None else None
    if depths is not None and not all(0 <= d <= 1 for d in depths):
        raise LongRopeError(f"--depths must be numbers in [0, 1], got {args.depths}")
    model, tok, scaling = _load_scaled(args, lengths, what="eval passkey", kv_cache=True,
                                       held=[n + args.max_new_tokens for n in lengths])
    from ..data.passkey import passkey_prompt
    passkey_prompt(tok, min(lengths), 0.5, 1)  # a length too short for a prompt fails before any output
    print(f"scaling: {_meta(args, scaling, model)['scaling']}")
    res = passkey_eval(model, tok, lengths, trials=args.trials, depths=depths, seed=args.seed,
                       max_new_tokens=args.max_new_tokens, progress=True)
    print(length_table({"accuracy": res.by_length}, pct=True, corner=""))
    print(length_table({f"depth {d}": {n: row.get(d) for n, row in res.grid.items()}
                        for d in res.by_depth}, pct=True, corner="depth \\ length"))
    print(f"overall {100 * res.accuracy:.1f}% ({len(res.trials)} trials, {res.seconds:.0f} s)")
    if args.out:
        write_json(args.out, {"passkey": res.to_dict(), "meta": {**_meta(args, scaling, model), "trials": args.trials}})
        print(f"wrote {args.out}")
    return 0


def run_tasks(args) -> int:
    from ..eval import tasks as harness
    from ..io import write_json

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    lengths = int_list(args.lengths) if args.lengths is not None else None
    harness.require_harness()  # fail before loading the model
    harness.check_limit(args.limit)
    if lengths is not None:
        harness.check_tasks(tasks, harness.LENGTH_TASKS, lengths=True, allow_downloads=args.allow_downloads)
        harness.check_lengths(lengths, tasks)
        if args.num_fewshot is not None:
            raise LongRopeError("--num-fewshot does not apply to RULER tasks (--lengths)")
    elif not tasks:
        raise LongRopeError("the list of tasks is empty")
    model, tok, scaling = _load_scaled(args, lengths or [], what="eval tasks", kv_cache=True)
    if lengths is not None:
        res = harness.run_tasks_at_lengths(model, tok, tasks, lengths, limit=args.limit, batch_size=args.batch_size,
                                           seed=args.seed, allow_downloads=args.allow_downloads)
        from ..eval.report import tasks_table
        print(tasks_table(res))
        out = {"tasks": {t: {str(n): v for n, v in row.items()} for t, row in res.items()}}
    else:
        res = harness.run_tasks(model, tok, tasks, num_fewshot=args.num_fewshot, limit=args.limit,
                                batch_size=args.batch_size, seed=args.seed, allow_downloads=args.allow_downloads)
        for task, metrics in res.items():
            print(task + ": " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        out = {"tasks": res}
    if args.out:
        meta = {**_meta(args, scaling, model), "limit": args.limit, "batch_size": args.batch_size}
        write_json(args.out, {**out, "meta": meta})
        print(f"wrote {args.out}")
    return 0
