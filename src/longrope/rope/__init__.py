"""RoPE scaling: the method table (registry), the methods (loaded here, so any import of
`longrope.rope.*` sees them registered), their stock mappings, the `Scaling` value and its files."""
from . import methods  # noqa: F401  (registers the built-in methods in registry.METHODS)
