"""Recipes: the YAML file `longrope extend` runs, read and checked whole before any stage runs.

    name: builtin-8x
    model: builtin            # default model (overridable with --model)
    data: builtin             # default data source (overridable with --data)
    seed: 0
    stages:
      - search: {target_length: 8x, docs: 4}
      - short: {docs: 8}
      - export: {drop_n_hat: true}
      - compare: {lengths: [1x, 2x, 4x, 8x], methods: [none, pi, ntk, dynamic, yarn]}

A length may be written in tokens (`2048`, `2k`) or relative to the model's pre-trained window
(`8x`: eight times the window, read from the model's config when the recipe meets its model), so one
recipe serves a 256-token built-in model and a 4,096-token Llama alike.

Each stage's options are its component's config dataclass (SearchConfig, FinetuneConfig,
ExportConfig, CompareConfig); `validate` builds and checks all of them, and the stages against each
other, without loading anything. `device`/`dtype` at the recipe's top level apply to every stage
that loads a model (a stage's own value wins; `extend --device/--dtype` wins over both);
`trust_remote_code` comes only from `extend --trust-remote-code`, never from a file.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import LongRopeError
from .schema import LENGTH_FIELDS, build, check_types, parse_length

RECIPES_DIR = Path(__file__).parent / "recipes"
KINDS = ("search", "short", "finetune", "export", "compare")
_RELATIVE = re.compile(r"^\s*(\d+(\.\d+)?)\s*[xX]\s*$")


@dataclass
class ExportConfig:
    drop_n_hat: bool = False
    drop_short_attention: bool = False


@dataclass
class Context:
    """What a stage hands to the next (saved in each stage's done.json)."""
    model: str                      # the current model folder (or 'builtin')
    scaling: str | None = None      # the current factor file
    original: int | None = None     # the model's pre-trained window
    exported: str | None = None     # the exported model folder
    report: str | None = None       # the comparison report

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def update(self, doc: dict) -> None:
        for f in dataclasses.fields(self):
            if f.name in doc:
                setattr(self, f.name, doc[f.name])


@dataclass
class Stage:
    kind: str
    options: dict[str, Any]
    index: int

    @property
    def name(self) -> str:
        return f"{self.index:02d}-{self.kind}"


@dataclass
class Recipe:
    name: str
    stages: list[Stage]
    model: str = "builtin"
    data: str | None = None
    seed: int = 0
    description: str = ""
    model_shape: dict[str, Any] = field(default_factory=dict)  # for --dry-run when the model is not here
    device: str | None = None   # every stage's device unless the stage sets one
    dtype: str | None = None    # every stage's dtype (search, short, compare) unless the stage sets one
    overrides: dict[str, Any] = field(default_factory=dict)  # extend --device/--dtype/--trust-remote-code
    window: int | None = None   # the model's window, read when a length is written relative to it


# -- files -------------------------------------------------------------------------------------
def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A recipe file: a path, or the name of a shipped recipe."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if (RECIPES_DIR / f"{name_or_path}.yaml").is_file() and "/" not in str(name_or_path):
        return RECIPES_DIR / f"{name_or_path}.yaml"
    raise LongRopeError(f"unknown recipe {name_or_path!r}: not a file and not one of {', '.join(list_recipes())}")


def recipe_text(name_or_path: str) -> str:
    path = recipe_path(name_or_path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LongRopeError(f"{path} is not a UTF-8 text file") from None


def _yaml(text: str, path: Path):
    """YAML with a key given twice refused (plain safe_load keeps the last one silently)."""
    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        dup = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if dup is not None:
            raise LongRopeError(f"{path}: key {dup!r} is given twice (line {node.start_mark.line + 1})")
        return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Strict)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise LongRopeError(f"bad YAML in {path}: {str(e).splitlines()[0]}") from None


def load_recipe(name_or_path: str, **flags) -> Recipe:
    """Read, type-check and validate a recipe with extend's `flags` applied (as for `prepare`, which
    the caller runs before the recipe meets its model: only it checks the lengths against the window)."""
    path = recipe_path(name_or_path)
    doc = _yaml(recipe_text(name_or_path), path)
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), list) or not doc["stages"]:
        raise LongRopeError(f"{path}: a recipe needs a non-empty 'stages' list")
    stages = []
    for i, item in enumerate(doc["stages"], 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise LongRopeError(f"{path}: stage {i} must be one mapping like '- search: {{...}}'")
        (kind, opts), = item.items()
        if kind not in KINDS:
            raise LongRopeError(f"{path}: stage {i} has unknown kind {kind!r}; use {', '.join(KINDS)}")
        if opts is not None and not isinstance(opts, dict):
            raise LongRopeError(f"{path}: stage {i} ({kind}) must hold a mapping of options like "
                                f"'- {kind}: {{docs: 4}}', got {opts!r}")
        stages.append(Stage(kind, dict(opts or {}), i))
    known = {f.name for f in dataclasses.fields(Recipe)} - {"stages", "overrides", "window"}
    unknown = set(doc) - known - {"stages"}
    if unknown:
        raise LongRopeError(f"{path}: unknown recipe key(s) {', '.join(sorted(map(str, unknown)))}")
    recipe = Recipe(stages=stages, **{k: v for k, v in doc.items() if k in known and k != "name"},
                    name=doc.get("name", path.stem))
    check_types(recipe, str(path))
    return _resolve(recipe, **flags)


def prepare(recipe: Recipe, **flags) -> Recipe:
    """The recipe as it meets its model: extend's `flags` (model, data, device, dtype,
    trust_remote_code) applied over its own values, the model's window read, every stage validated and
    every search target checked to lie above the window. Returns the recipe."""
    _resolve(recipe, **flags)
    for st in recipe.stages:
        if st.kind == "search" and recipe.window:
            target = parse_length(length(recipe, st.options["target_length"]))
            if target <= recipe.window:
                raise LongRopeError(f"stage {st.name}: target_length {target} is not above the model's window "
                                    f"({recipe.window}): nothing to extend (write it relative to the window, "
                                    "e.g. 8x)")
    return recipe


def _resolve(recipe: Recipe, *, model: str | None = None, data: str | None = None, device: str | None = None,
             dtype: str | None = None, trust_remote_code: bool = False) -> Recipe:
    """Flags applied, the window read (when the model is here), everything validated."""
    recipe.model = model or recipe.model
    recipe.data = data or recipe.data
    given = (("device", device), ("dtype", dtype), ("trust_remote_code", trust_remote_code))
    recipe.overrides = {**recipe.overrides, **{k: v for k, v in given if v}}
    relative = any(_RELATIVE.match(str(v)) for st in recipe.stages for k, value in st.options.items()
                   if k in LENGTH_FIELDS for v in (value if isinstance(value, list) else [value]))
    try:
        recipe.window = window_for(recipe)
    except LongRopeError:
        if relative:
            raise
        recipe.window = None  # lengths in tokens: the model is checked when a stage loads it
    validate(recipe)
    return recipe


def window_for(recipe: Recipe) -> int:
    """The window lengths like `8x` multiply: from the model's config, else the recipe's model_shape."""
    from .models import resolve
    try:
        resolve(recipe.model)
    except LongRopeError:
        if recipe.model_shape.get("window"):
            return int(recipe.model_shape["window"])
        raise
    return window_of(recipe.model, trust_remote_code=bool(recipe.overrides.get("trust_remote_code")))


def window_of(model: str, *, trust_remote_code: bool = False) -> int:
    """The model's pre-trained window, read from its config (no weights are loaded)."""
    from .models import load_config, rope_config
    return rope_config(load_config(model, trust_remote_code=trust_remote_code))[2]


def length(recipe: Recipe, value, where: str = "recipe"):
    """A recipe length in tokens: 2048, '2k', or '8x' (times the model's window); lists element-wise."""
    if isinstance(value, list):
        return [length(recipe, v, where) for v in value]
    m = _RELATIVE.match(value) if isinstance(value, str) else None
    if not m:
        return value
    if recipe.window is None:
        raise LongRopeError(f"{where}: {value!r} is relative to the model's window, which is not known here")
    tokens = float(m.group(1)) * recipe.window
    if tokens != int(tokens) or tokens < 1:
        raise LongRopeError(f"{where}: {value} of the window ({recipe.window}) is not a whole number of tokens")
    return int(tokens)


def options(recipe: Recipe, stage: Stage) -> dict:
    """A stage's options with its relative lengths in tokens."""
    return {k: length(recipe, v, f"stage {stage.name}: {k}") if k in LENGTH_FIELDS else v
            for k, v in stage.options.items()}


def recipe_doc(recipe: Recipe) -> dict:
    """The recipe as run (relative lengths in tokens): what recipe.json records and resume compares."""
    doc = dataclasses.asdict(recipe)
    for k in ("overrides", "window"):
        doc.pop(k)
    doc["stages"] = [{**s, "options": options(recipe, st)} for s, st in zip(doc["stages"], recipe.stages)]
    return doc


# -- per-stage configs -----------------------------------------------------------------------
def runtime(recipe: Recipe, stage: Stage, keys=("device", "dtype")) -> dict:
    """device/dtype for a stage: extend's override > the stage's own > the recipe's top level."""
    out = {}
    for k in keys:
        v = recipe.overrides.get(k) or stage.options.get(k) or getattr(recipe, k)
        if v is not None:
            out[k] = v
    return out


def _remote(recipe: Recipe) -> dict:
    return {"trust_remote_code": True} if recipe.overrides.get("trust_remote_code") else {}


def search_config(recipe: Recipe, stage: Stage, ctx: Context):
    from .search.config import SearchConfig
    opts = {**options(recipe, stage), **runtime(recipe, stage), **_remote(recipe)}
    if stage.kind == "short":
        opts.setdefault("short_of", ctx.scaling)
        opts.setdefault("target_length", ctx.original or 1)
    if opts.get("seed_from") == "previous":  # progressive: seed with the last stage's factors, carried
        opts["seed_from"] = ctx.scaling
    return build(SearchConfig, f"stage {stage.name}", model=ctx.model, data=recipe.data, seed=recipe.seed,
                 **opts)


def finetune_config(recipe: Recipe, stage: Stage, ctx: Context, out: Path):
    from .train.config import FinetuneConfig
    opts = {**options(recipe, stage), **runtime(recipe, stage, ("device",)), **_remote(recipe)}
    scaling = opts.pop("scaling", None) or (f"longrope:{ctx.scaling}" if ctx.scaling else "none")
    return build(FinetuneConfig, f"stage {stage.name}", out=str(out / "model"), work=str(out / "work"),
                 model=ctx.model, scaling=scaling, data=recipe.data, seed=recipe.seed, **opts)


def compare_config(recipe: Recipe, stage: Stage):
    from .eval.compare import CompareConfig
    return build(CompareConfig, f"stage {stage.name}", data=recipe.data, seed=recipe.seed,
                 **{**options(recipe, stage), **runtime(recipe, stage)}).validated(f"stage {stage.name}")


def _check_runtime(where: str, device: str | None, dtype: str | None) -> None:
    import torch

    from .models import torch_dtype
    if dtype is not None and dtype != "auto":
        try:
            torch_dtype(dtype)
        except LongRopeError as e:
            raise LongRopeError(f"{where}: {e}") from None
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            raise LongRopeError(f"{where}: unknown device {device!r}; use cpu, cuda or cuda:N") from None


def _named(where: str, check: Callable):
    """A component's own check, its one-line error prefixed with the stage."""
    try:
        return check()
    except LongRopeError as e:
        raise LongRopeError(f"{where}: {e}") from None


def validate(recipe: Recipe) -> None:
    """Every stage's options as its config dataclass (types and values), and the stages against each
    other, checked without loading anything."""
    ctx = Context(model=recipe.model, scaling="factors.json", original=recipe.window or 2)  # placeholders
    search_n_hat: tuple[str, bool] | None = None  # (stage, searches n_hat) of the factors export will get
    short_attention: str | None = None
    _check_runtime("recipe", recipe.device, recipe.dtype)
    _check_runtime("extend", recipe.overrides.get("device"), recipe.overrides.get("dtype"))
    for st in recipe.stages:
        where = f"stage {st.name}"
        _check_runtime(where, st.options.get("device"), st.options.get("dtype"))
        if st.kind in ("search", "short"):
            if st.kind == "search" and "target_length" not in st.options:
                raise LongRopeError(f"{where}: search needs target_length")
            if st.kind == "short" and search_n_hat is None:
                raise LongRopeError(f"{where}: a short search needs an earlier search")
            if st.options.get("seed_from") == "previous" and search_n_hat is None:
                raise LongRopeError(f"{where}: seed_from: previous needs an earlier search")
            cfg = _named(where, search_config(recipe, st, ctx).resolved)
            if st.kind == "search":
                search_n_hat = (st.name, cfg.search_n_hat)
            short_attention = st.name if st.kind == "short" and cfg.search_attention_scale else None
        elif st.kind == "finetune":
            if "length" not in st.options or "steps" not in st.options:
                raise LongRopeError(f"{where}: finetune needs length and steps")
            _named(where, finetune_config(recipe, st, ctx, Path("x")).validate)
        elif st.kind == "compare":
            cfg = compare_config(recipe, st)
            if cfg.plots:
                from .eval.report import require_plots
                require_plots()
        elif st.kind == "export":
            cfg = build(ExportConfig, where, **st.options)
            if search_n_hat is None:
                raise LongRopeError(f"{where}: export needs an earlier search")
            if search_n_hat[1] and not cfg.drop_n_hat:
                raise LongRopeError(
                    f"{where}: drop_n_hat is false but stage {search_n_hat[0]} searches n_hat (search_n_hat "
                    "defaults to true), so the export would refuse its factors at the end; set "
                    f"drop_n_hat: true here or search_n_hat: false in {search_n_hat[0]}")
            if short_attention and not cfg.drop_short_attention:
                raise LongRopeError(
                    f"{where}: drop_short_attention is false but stage {short_attention} searches a short "
                    "attention scale, which the stock format cannot hold; set drop_short_attention: true "
                    f"here or search_attention_scale: false in {short_attention}")


def check_data(recipe: Recipe) -> None:
    """The recipe's data source loads and has documents in every split a stage reads (search:
    validation, finetune: train, compare: test): a bad --data fails before the first stage."""
    from .data import load_documents
    splits = {"search": "validation", "short": "validation", "finetune": "train", "compare": "test"}
    for split in dict.fromkeys(st.options.get("split", splits[st.kind]) for st in recipe.stages
                               if st.kind in splits):
        load_documents(recipe.data, split)
