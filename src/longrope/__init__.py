"""longrope: extend the context window of RoPE language models with LongRoPE.

    import longrope
    longrope.apply(model, "longrope:runs/search/factors.json")   # or "yarn:8", a Scaling, ...
    longrope.remove(model)
"""
__version__ = "0.1.0"

from .errors import LongRopeError  # noqa: E402

__all__ = ["LongRopeError", "Scaling", "apply", "remove", "load_scaling", "export"]


def __getattr__(name):  # lazy: `import longrope` stays light, the CLI starts fast
    if name == "Scaling":
        from .rope.scaling import Scaling
        return Scaling
    if name == "load_scaling":
        from .rope.files import load_scaling
        return load_scaling
    if name in ("apply", "remove"):
        from . import patch
        return getattr(patch, name)
    if name == "export":
        from .exporter import export
        return export
    raise AttributeError(name)
