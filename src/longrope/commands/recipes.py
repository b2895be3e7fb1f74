"""`longrope recipes list|show|copy`: the shipped recipes, printed or copied to a file to edit."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list, print or copy the shipped recipes (for `longrope extend`)",
                       description="The recipes `longrope extend --recipe NAME` runs. Copy one to edit its "
                                   "budgets or lengths, then run it with `--recipe FILE`.")
    rsub = p.add_subparsers(dest="recipes_command", metavar="ACTION")
    q = rsub.add_parser("list", help="the shipped recipes with their descriptions")
    q.set_defaults(func=run_list)
    q = rsub.add_parser("show", help="print a recipe (shipped name or file)")
    q.add_argument("name", help="recipe name, e.g. builtin-8x, or a YAML file")
    q.set_defaults(func=run_show)
    q = rsub.add_parser("copy", help="copy a recipe to a file to edit")
    q.add_argument("name", help="recipe name, e.g. builtin-8x, or a YAML file")
    q.add_argument("dest", help="the new YAML file (or a folder: NAME.yaml inside it)")
    q.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    q.set_defaults(func=run_copy)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_list(args) -> int:
    from ..recipe import list_recipes, load_recipe

    names = list_recipes()
    width = max(map(len, names))
    for name in names:
        r = load_recipe(name)
        print(f"{name:<{width}}  {r.description.strip() or '-'}")
    return 0


def run_show(args) -> int:
    from ..recipe import recipe_text

    print(recipe_text(args.name), end="")
    return 0


def run_copy(args) -> int:
    from pathlib import Path

    from ..io import check_file_output, write_text
    from ..recipe import recipe_path, recipe_text

    text = recipe_text(args.name)
    dest = Path(args.dest).expanduser()
    if dest.is_dir() and not dest.is_symlink():
        dest = dest / recipe_path(args.name).name
    check_file_output(dest, overwrite=args.overwrite, option="DEST")
    write_text(dest, text)
    print(f"wrote {dest}: edit it, then `longrope extend --recipe {dest} --dry-run`")
    return 0
