"""`longrope extend --recipe NAME|PATH --out DIR`: the progressive LongRoPE pipeline."""
from __future__ import annotations

import os
import sys


def register(sub) -> None:
    from ..recipe import list_recipes
    p = sub.add_parser("extend", help="run a recipe: search, fine-tune, search again, short factors, export, report",
                       description="Run a YAML recipe of stages under DIR/NN-stage/. Shipped recipes: "
                                   + ", ".join(list_recipes()) + " (`longrope recipes show NAME` prints one, "
                                   "`longrope recipes copy NAME FILE` copies it to edit).")
    p.add_argument("--recipe", default="builtin-8x", help="shipped recipe name or a YAML file (default builtin-8x)")
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="override the recipe's model (folder, .gguf file or 'builtin')")
    g.add_argument("--dtype", default=None,
                   help="dtype of the search and compare stages (float32, bfloat16, float16); "
                        "default: the recipe's, else float32")
    g.add_argument("--device", default=None,
                   help="device of every stage (cpu, cuda, cuda:N); default: the recipe's, else cpu")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the model folder in every stage (off by default)")
    p.add_argument("--data", default=None, help="override the recipe's data source")
    p.add_argument("--resume", action="store_true",
                   help="skip finished stages, continue an interrupted one (only a run of the same recipe, "
                        "model and data: anything else is refused)")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the recipe, the model's config and the data, and print the plan and its cost")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import LongRopeError
    from ..pipeline import run as run_recipe
    from ..recipe import check_data, load_recipe, prepare

    flags = dict(model=args.model, data=args.data, device=args.device, dtype=args.dtype,
                 trust_remote_code=args.trust_remote_code)
    recipe = prepare(load_recipe(args.recipe, **flags))
    if args.dry_run:
        from ..plan import describe_plan
        check_data(recipe)
        print(describe_plan(recipe))
        return 0
    if not args.out:
        raise LongRopeError("--out is required (or pass --dry-run)")
    ctx = run_recipe(recipe, args.out, resume=args.resume, log=lambda msg: print(msg, file=sys.stderr, flush=True),
                     **flags)
    if os.environ.get("RANK", "0") != "0":  # under a launcher rank 0 reports (and wrote everything)
        return 0
    print(f"done: {args.out}")
    for key in ("scaling", "exported", "report"):
        if getattr(ctx, key):
            print(f"  {key}: {getattr(ctx, key)}")
    return 0
