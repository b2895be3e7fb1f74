"""lm-evaluation-harness tasks, in-process, on the already patched model, offline.

The harness is an optional extra (`pip install 'longrope[eval]'`) imported only here. Its `HFLM`
wrapper takes a loaded `PreTrainedModel`, so the RoPE patch applied by `longrope.apply` is what the
tasks see; nothing is reloaded from disk.

Two entry points:
- `run_tasks_at_lengths` runs RULER's synthetic tasks, one harness run per length L: the task
  generates its samples locally, sized with OUR tokenizer to L tokens (prompt + the task's
  generation budget), and the harness's max_length is L + PREFIX_ROOM (room for the answer prefix
  the harness appends, so no prompt is left-truncated). Returns {task: {length: accuracy}}.
- `run_tasks` runs any harness task once (the task's own data must already be in the local cache).

Offline: the runs happen under `offline()` (HF hub and datasets offline, nltk's download a no-op),
and a RULER task known to download (essays, SQuAD, HotpotQA) is refused before anything runs.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Sequence

from ..errors import LongRopeError
from ..models import model_device

INSTALL_HINT = "lm-evaluation-harness is not installed; install it with: pip install 'longrope[eval]'"

# RULER tasks of lm-eval 0.4.x that build their samples from local generators only (wonderwords
# word lists, repeated sentences, synthetic needles): checked by reading lm_eval/tasks/ruler/.
OFFLINE_RULER = ("niah_single_1", "niah_multikey_2", "niah_multikey_3", "ruler_vt", "ruler_cwe", "ruler_fwe")
# RULER tasks that fetch data over the network, and what they fetch.
NETWORK_RULER = {
    "niah_single_2": "Paul Graham essays (hub dataset baber/paul_graham_essays)",
    "niah_single_3": "Paul Graham essays (hub dataset baber/paul_graham_essays)",
    "niah_multikey_1": "Paul Graham essays (hub dataset baber/paul_graham_essays)",
    "niah_multivalue": "Paul Graham essays (hub dataset baber/paul_graham_essays)",
    "niah_multiquery": "Paul Graham essays (hub dataset baber/paul_graham_essays)",
    "ruler_qa_squad": "SQuAD v2 dev set (rajpurkar.github.io)",
    "ruler_qa_hotpot": "HotpotQA dev set (huggingface.co)",
    "ruler": "the essay and QA sets of its niah_single_2/3, niah_multikey_1, niah_multivalue, "
             "niah_multiquery, ruler_qa_squad and ruler_qa_hotpot subtasks",
}
LENGTH_TASKS = frozenset(OFFLINE_RULER) | frozenset(NETWORK_RULER)
# Below these lengths the harness's sample generator never returns (ruler_vt sizes an in-context
# example to 500 tokens, then loops until a sample fits beside it): refused up front.
MIN_LENGTHS = {"ruler_vt": 1024}
PREFIX_ROOM = 64  # tokens beyond L for the answer prefix lm-eval appends to a RULER prompt


def require_harness():
    """The `lm_eval` module, or a one-line LongRopeError saying how to install it."""
    try:
        import lm_eval
    except ImportError:
        raise LongRopeError(INSTALL_HINT) from None
    try:  # the harness's HF model imports accelerate (and more) at import time
        from lm_eval.models.huggingface import HFLM  # noqa: F401
    except ImportError as e:
        raise LongRopeError(f"lm-evaluation-harness is installed but its Hugging Face model cannot be "
                            f"imported ({e}); install the eval extra: pip install 'longrope[eval]'") from None
    return lm_eval


@contextlib.contextmanager
def offline(enabled: bool = True):
    """Make the hub, `datasets` and nltk's downloader refuse the network for the duration."""
    if not enabled:
        yield
        return
    import sys

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    patched = []  # (object, attribute, old value): the flags the libraries read at import time
    for mod, attrs in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                       ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        m = sys.modules.get(mod)
        for a in attrs:
            if m is not None and hasattr(m, a):
                patched.append((m, a, getattr(m, a)))
                setattr(m, a, True)
    with contextlib.suppress(ImportError):
        import nltk  # RULER's prepare_niah downloads punkt_tab at import; only essay tasks use it
        patched.append((nltk, "download", nltk.download))
        nltk.download = lambda *a, **k: False
    try:
        yield
    finally:
        for obj, attr, old in reversed(patched):
            setattr(obj, attr, old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ruler_dir() -> str:
    import lm_eval.tasks

    return os.path.join(os.path.dirname(lm_eval.tasks.__file__), "ruler")


def task_manager(tasks: Sequence[str], metadata: dict | None = None):
    """A harness TaskManager; indexes only the RULER folder when every task is a RULER task (fast)."""
    from lm_eval.tasks import TaskManager

    if set(tasks) <= LENGTH_TASKS:
        return TaskManager(include_defaults=False, include_path=_ruler_dir(), metadata=metadata)
    return TaskManager(metadata=metadata)


def check_tasks(tasks: Sequence[str], known: Sequence[str], *, lengths: bool,
                allow_downloads: bool = False) -> list[str]:
    """The task list, or a one-line LongRopeError for an empty list, an unknown task, a task that
    would download (unless allowed) or, with `lengths`, a task that takes no length."""
    tasks = [t.strip() for t in tasks if t and t.strip()]
    if not tasks:
        raise LongRopeError("the list of tasks is empty")
    known = set(known)
    for t in tasks:
        if lengths and t not in LENGTH_TASKS:
            raise LongRopeError(f"task {t!r} is not a RULER task; --lengths works with the RULER tasks "
                                f"{', '.join(OFFLINE_RULER)}")
        if t not in known and t not in LENGTH_TASKS:
            raise LongRopeError(f"unknown lm-evaluation-harness task: {t!r}")
        if not lengths and t in LENGTH_TASKS:
            raise LongRopeError(f"RULER task {t} is sized per length: give --lengths")
        if t in NETWORK_RULER and not allow_downloads:
            raise LongRopeError(f"task {t} downloads {NETWORK_RULER[t]}, which an offline run cannot; "
                                f"offline RULER tasks: {', '.join(OFFLINE_RULER)}")
    return tasks


def check_lengths(lengths: Sequence[int], tasks: Sequence[str]) -> list[int]:
    out = [int(n) for n in lengths]
    if not out:
        raise LongRopeError("the list of lengths is empty")
    for n in out:
        if n < 1:
            raise LongRopeError(f"lengths must be >= 1, got {n}")
        for t in tasks:
            if n < MIN_LENGTHS.get(t, 0):
                raise LongRopeError(f"task {t} needs lengths >= {MIN_LENGTHS[t]} (its sample generator "
                                    f"never finishes below), got {n}")
    return out


def _harness_error(e: BaseException) -> LongRopeError:
    if isinstance(e, ZeroDivisionError):  # RULER's string match over a sample with no expected answer
        return LongRopeError("lm-evaluation-harness: a task generated samples with no expected answer (ruler_cwe "
                             "does when the length leaves no room for its word lists): use longer lengths")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return LongRopeError(f"lm-evaluation-harness: {first}")


HARNESS_ERRORS = (KeyError, ValueError, AssertionError, RuntimeError, OSError, ConnectionError, ZeroDivisionError)


def _evaluate(lm, tasks, tm, *, limit, seed, log_samples: bool = False) -> dict:
    lm_eval = require_harness()
    try:
        return lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, limit=limit,
                                       log_samples=log_samples, random_seed=seed, numpy_random_seed=seed,
                                       torch_random_seed=seed, fewshot_random_seed=seed) or {}
    except HARNESS_ERRORS as e:
        raise _harness_error(e) from None


def check_limit(limit: float | None):
    if limit is None:
        return None
    if limit <= 0:
        raise LongRopeError(f"--limit must be > 0, got {limit:g}")
    return int(limit) if limit >= 1 else float(limit)


def run_tasks_at_lengths(model, tokenizer, tasks: Sequence[str], lengths: Sequence[int], *,
                         limit: float | None = None, batch_size: int = 1, seed: int = 0,
                         allow_downloads: bool = False, samples: dict | None = None,
                         log=print) -> dict[str, dict[int, float]]:
    """RULER accuracy of `model` as it is (patched or not): {task: {length: accuracy in [0, 1]}}.

    One harness run per length L: the tasks generate their samples with `tokenizer` (saved to a
    temporary folder, the harness's way of taking a tokenizer) sized to L, `limit` samples each (the
    first ones the seeded generator makes). Pass a dict as `samples` to get the harness's per-sample
    records back as {task: {length: [record, ...]}}."""
    require_harness()
    from lm_eval.models.huggingface import HFLM

    tasks = check_tasks(tasks, LENGTH_TASKS, lengths=True, allow_downloads=allow_downloads)
    lengths = check_lengths(lengths, tasks)
    if batch_size < 1:
        raise LongRopeError(f"--batch-size must be >= 1, got {batch_size}")
    limit = check_limit(limit)
    out: dict[str, dict[int, float]] = {t: {} for t in tasks}
    with tempfile.TemporaryDirectory(prefix="longrope-tok-") as tok_dir, offline(not allow_downloads):
        tokenizer.save_pretrained(tok_dir)
        for n in lengths:
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                      device=str(model_device(model)), max_length=n + PREFIX_ROOM)
            tm = task_manager(tasks, {"tokenizer": tok_dir, "max_seq_lengths": [n]})
            res = _evaluate(lm, tasks, tm, limit=limit, seed=seed, log_samples=samples is not None)
            for t in tasks:
                metrics = res.get("results", {}).get(t, {})
                acc = metrics.get(f"{n},none")
                if not isinstance(acc, (int, float)) or acc < 0:
                    raise LongRopeError(f"lm-evaluation-harness returned no score for {t} at length {n}")
                out[t][n] = float(acc)
                if samples is not None:
                    samples.setdefault(t, {})[n] = res.get("samples", {}).get(t, [])
                if log:
                    log(f"{t} @ {n}: {100 * acc:.1f}% ({metrics.get('sample_len', '?')} samples)")
    return out


def run_tasks(model, tokenizer, tasks: Sequence[str], *, num_fewshot: int | None = None,
              limit: float | None = None, batch_size: int = 1, seed: int = 0,
              allow_downloads: bool = False) -> dict[str, dict]:
    """Evaluate any harness `tasks` once on `model` as it is; returns {task: {metric: value}}."""
    lm_eval = require_harness()
    from lm_eval.models.huggingface import HFLM

    tasks = [t for t in tasks if t and t.strip()]
    if not tasks:
        raise LongRopeError("the list of tasks is empty")
    limit = check_limit(limit)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model_device(model)))
    with offline(not allow_downloads):
        tm = task_manager(tasks)
        tasks = check_tasks(tasks, tm.all_tasks, lengths=False, allow_downloads=allow_downloads)
        try:
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=tm, num_fewshot=num_fewshot,
                                          limit=limit, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed)
        except HARNESS_ERRORS as e:
            raise _harness_error(e) from None
    results = (out or {}).get("results", {})
    return {task: {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                   for k, v in metrics.items() if k != "alias"} for task, metrics in results.items()}


def plot_tasks(by_method: dict, path, title: str = "RULER accuracy vs length"):
    """One panel per task, accuracy against length, one line per method; a PNG at `path`."""
    from pathlib import Path

    from ..plotting import pyplot, save_png

    plt = pyplot()

    tasks = list(dict.fromkeys(t for res in by_method.values() for t in res))
    if not tasks:
        raise LongRopeError("no task results to plot")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    try:
        for ax, task in zip(axes[0], tasks):
            for method, res in by_method.items():
                pts = sorted((int(n), float(v)) for n, v in res.get(task, {}).items() if v is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel("length (tokens)")
            ax.set_ylabel("accuracy")
            ax.set_title(task, fontsize=9)
            ax.grid(True, alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(title, fontsize=10)
        save_png(fig, path)
    finally:
        plt.close(fig)
    return Path(path)
