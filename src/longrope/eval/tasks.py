"""Short-context tasks through lm-evaluation-harness, in-process, on the already patched model.

The harness is an optional extra (`pip install 'longrope[eval]'`) imported only here. Its `HFLM`
wrapper takes a loaded `PreTrainedModel`, so the RoPE patch applied by `longrope.apply` is what the
tasks see; nothing is reloaded from disk and nothing is downloaded by longrope itself (the harness
fetches its task datasets through `datasets` unless they are cached).
"""
from __future__ import annotations

from typing import Sequence

from ..errors import LongRopeError

INSTALL_HINT = "lm-evaluation-harness is not installed; install it with: pip install 'longrope[eval]'"


def require_harness():
    """The `lm_eval` module, or a one-line LongRopeError saying how to install it."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError:
        raise LongRopeError(INSTALL_HINT) from None
    return lm_eval


def _device(model) -> str:
    try:
        return str(next(model.parameters()).device)
    except StopIteration:  # pragma: no cover
        return "cpu"


def run_tasks(model, tokenizer, tasks: Sequence[str], *, num_fewshot: int | None = None,
              limit: float | None = None, batch_size: int = 1, seed: int = 0) -> dict[str, dict]:
    """Evaluate `tasks` on `model` as it is (patched or not); returns {task: {metric: value}}."""
    tasks = [t for t in tasks if t]
    if not tasks:
        raise LongRopeError("the list of tasks is empty")
    lm_eval = require_harness()
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=_device(model))
    if limit is not None and limit >= 1:
        limit = int(limit)
    try:
        out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                      random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                      fewshot_random_seed=seed)
    except (KeyError, ValueError) as e:
        raise LongRopeError(f"lm-evaluation-harness: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    results = (out or {}).get("results", {})
    clean = {}
    for task, metrics in results.items():
        clean[task] = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                       for k, v in metrics.items() if k != "alias"}
    return clean
