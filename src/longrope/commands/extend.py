"""`longrope extend --recipe NAME|PATH --out DIR`: the progressive LongRoPE pipeline."""
from __future__ import annotations

import sys


def register(sub) -> None:
    from ..pipeline import list_recipes
    p = sub.add_parser("extend", help="run a recipe: search, fine-tune, search again, short factors, export, report",
                       description="Run a YAML recipe of stages under DIR/NN-stage/. Shipped recipes: "
                                   + ", ".join(list_recipes()) + ".")
    p.add_argument("--recipe", default="builtin-8x", help="shipped recipe name or a YAML file (default builtin-8x)")
    p.add_argument("--out", help="output folder (required unless --dry-run)")
    p.add_argument("--model", default=None, help="override the recipe's model (folder or 'builtin')")
    p.add_argument("--data", default=None, help="override the recipe's data source")
    p.add_argument("--device", default=None,
                   help="device of every stage (cpu, cuda, cuda:N); default: the recipe's, else cpu")
    p.add_argument("--dtype", default=None,
                   help="dtype of the search and compare stages (float32, bfloat16, float16); "
                        "default: the recipe's, else float32")
    p.add_argument("--resume", action="store_true",
                   help="skip finished stages, continue an interrupted one (only a run of the same recipe, "
                        "model and data: anything else is refused)")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe and print the plan and its cost")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import LongRopeError
    from ..pipeline import load_recipe, run as run_recipe

    recipe = load_recipe(args.recipe)
    if args.model:
        recipe.model = args.model
    if args.data:
        recipe.data = args.data
    recipe.overrides = {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v}
    from ..pipeline import validate
    validate(recipe)
    if args.dry_run:
        from ..plan import describe_plan
        print(describe_plan(recipe))
        return 0
    if not args.out:
        raise LongRopeError("--out is required (or pass --dry-run)")
    ctx = run_recipe(recipe, args.out, resume=args.resume, device=args.device, dtype=args.dtype,
                     log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"done: {args.out}")
    for key in ("scaling", "exported", "report"):
        if getattr(ctx, key):
            print(f"  {key}: {getattr(ctx, key)}")
    return 0
