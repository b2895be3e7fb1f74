"""`longrope compare`: perplexity and passkey of several scaling methods; JSON, markdown, PNG plots.
Options and defaults come from `longrope.eval.compare.CompareConfig`."""
from __future__ import annotations

import sys

from ._common import add_data_args, add_model_args

CLI_FIELDS = ("methods", "lengths", "factor", "docs", "stride", "passkey_trials", "passkey_lengths", "depths",
              "short_length", "batch_size", "seed", "plots", "tasks", "task_limit", "task_lengths", "shipped")


def register(sub) -> None:
    from ..eval.compare import CompareConfig
    from ..schema import add_config_args

    p = sub.add_parser(
        "compare", help="compare RoPE scaling methods: perplexity and passkey per length, with a report",
        description="Evaluate each method on the same data and passkeys; write DIR/results.json, "
                    "DIR/report.md, DIR/ppl.png and DIR/passkey_<method>.png. The model is measured as "
                    "loaded (`model`, its own config scaling) and with each method swapped in.")
    add_model_args(p)
    add_data_args(p, split=CompareConfig.split)
    add_config_args(p, CompareConfig, CLI_FIELDS)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a comparison longrope wrote in --out before (never a folder it did not write)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..eval.compare import CompareConfig, compare
    from ..eval.outputs import write_outputs
    from ..io import mark_finished, prepare_output
    from ..eval.report import ppl_table, require_plots
    from ..schema import build, from_args
    from ._common import load_model_from_args

    cfg = build(CompareConfig, "compare", data=args.data, split=args.split,
                **from_args(args, CompareConfig, CLI_FIELDS)).validated()
    if cfg.plots:
        require_plots()  # before the work
    with prepare_output(args.out, kind="compare", overwrite=args.overwrite):  # before the work
        model, tok = load_model_from_args(args)
        result = compare(model, tok, cfg, progress=True, log=lambda msg: print(msg, file=sys.stderr, flush=True))
        write_outputs(result, args.out, plots=cfg.plots)
        mark_finished(args.out)
    meta = result.meta
    print(f"perplexity ({meta['ppl_mode']}, {meta['docs']} docs per length, data {meta['data']}; "
          f"scaling: {meta['scaling']}):")
    print(ppl_table(result))
    print(f"wrote {args.out}/: " + ", ".join(meta["files"]))
    return 0
