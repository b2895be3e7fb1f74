"""`longrope compare`: perplexity and passkey of several scaling methods; JSON, markdown, PNG plots."""
from __future__ import annotations

import sys

from ._common import add_data_args, add_model_args, int_list


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare RoPE scaling methods: perplexity and passkey per length, with a report",
        description="Evaluate each method on the same data and passkeys; write DIR/results.json, "
                    "DIR/report.md, DIR/ppl.png and DIR/passkey_<method>.png.")
    add_model_args(p)
    add_data_args(p, split="test")
    p.add_argument("--methods", default="none,pi,ntk,dynamic,yarn",
                   help="comma-separated scalings: none, pi[:s], ntk[:s], dynamic[:s], yarn[:s], llama3[:s], "
                        "longrope:PATH (default none,pi,ntk,dynamic,yarn)")
    p.add_argument("--lengths", default="256,512,1024,2048", help="evaluation lengths (default 256,512,1024,2048)")
    p.add_argument("--factor", type=float, default=None,
                   help="factor of bare baseline names (default: longest length / original window)")
    p.add_argument("--docs", type=int, default=4, help="documents per length (default 4)")
    p.add_argument("--stride", type=int, default=None, help="sliding-window stride (default: truncate mode)")
    p.add_argument("--passkey-trials", type=int, default=5,
                   help="passkey prompts per length and depth (default 5; 0 skips passkey)")
    p.add_argument("--depths", default=None, help="passkey key depths in [0,1] (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--short-length", type=int, default=None,
                   help="length of the short-context cost check (default: the original window)")
    p.add_argument("--batch-size", type=int, default=1, help="samples per forward pass (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of sample selection and passkeys (default 0)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def float_list(text: str) -> list[float]:
    from ..errors import LongRopeError

    try:
        out = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise LongRopeError(f"not a list of numbers: {text!r}") from None
    if not out:
        raise LongRopeError("the list of depths is empty")
    return out


def write_outputs(results: dict, out_dir, *, plots: bool = True) -> dict:
    """results.json, report.md and (unless plots=False) ppl.png and passkey_<method>.png."""
    from pathlib import Path

    from ..eval.report import plot_passkey, plot_ppl, render_report, safe_name
    from ..io import write_json

    out = Path(out_dir)
    images = {}
    if plots:
        plot_ppl(results, out / "ppl.png", title=f"Perplexity vs length ({results['meta'].get('model', '')})")
        images["ppl"] = "ppl.png"
        for m, grid in results.get("passkey_depth", {}).items():
            name = f"passkey_{safe_name(m)}.png"
            plot_passkey(grid, out / name, title=f"passkey accuracy: {m}")
            images[m] = name
    results["meta"]["files"] = sorted(["results.json", "report.md"] + list(images.values()))
    write_json(out / "results.json", results)
    from ..io import write_text
    write_text(out / "report.md", render_report(results, images))
    return images


def run(args) -> int:
    from ..errors import LongRopeError
    from ..eval.compare import compare, parse_methods
    from ..eval.report import ppl_table
    from ._common import load_model_from_args

    lengths = int_list(args.lengths)
    methods = parse_methods(args.methods)
    depths = float_list(args.depths) if args.depths is not None else None
    if args.passkey_trials < 0:
        raise LongRopeError(f"--passkey-trials must be >= 0, got {args.passkey_trials}")
    model, tok = load_model_from_args(args)
    results = compare(model, tok, methods, lengths, data=args.data, split=args.split, docs=args.docs,
                      passkey_trials=args.passkey_trials, depths=depths, seed=args.seed,
                      factor=args.factor, stride=args.stride, batch_size=args.batch_size,
                      short_length=args.short_length, progress=True,
                      log=lambda msg: print(msg, file=sys.stderr, flush=True))
    write_outputs(results, args.out, plots=not args.no_plots)
    meta = results["meta"]
    print(f"perplexity ({meta['ppl_mode']}, {meta['docs']} docs per length, data {meta['data']}):")
    print(ppl_table(results))
    print(f"wrote {args.out}/: " + ", ".join(meta["files"]))
    return 0
