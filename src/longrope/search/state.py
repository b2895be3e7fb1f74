"""The files of a search folder, read and written in one place.

    state.json            the whole run after every generation: resolved config, window, baselines,
                          seeds, counters and the evolution's state (`evolve(..., state=...)`)
    history.jsonl         one line per evaluation
    factors.partial.json  the best factors so far, while the search runs
    factors.json          the result, written once at the end
    descent.json          the descent's state after every step, until the first state.json
    sweep.json            a critical-dimension sweep's settings and results (search/sweep.py); its
                          searches are in the folder's critical-K/ subfolders

Every file is written atomically (rank 0 only), so a run killed at any moment resumes from its
last generation (or descent step).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..errors import LongRopeError
from ..io import write_json, write_text
from .config import SearchConfig
from .space import Candidate

FORMAT = "longrope-search/1"
PARTIAL = "factors.partial.json"
DESCENT_FILE = "descent.json"
FILES = ("state.json", "history.jsonl", "factors.json", PARTIAL, "search.png", DESCENT_FILE)
SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "longrope-sweep/1"


def _read(path: Path, what: str) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LongRopeError(f"cannot read {path}: {e}") from None
    if not isinstance(doc, dict):
        raise LongRopeError(f"{path} is not a longrope {what}")
    return doc


def _config(path: Path, config: dict) -> dict:
    """The saved (resolved) config of `path`, checked, with the values of fields it predates."""
    if not set(config) <= set(SearchConfig.__dataclass_fields__):
        raise LongRopeError(f"{path} is not a readable longrope search state (unknown settings)")
    try:
        SearchConfig.from_saved(config).resolved()
    except TypeError:  # a value of the wrong JSON type
        raise LongRopeError(f"{path}: the saved config holds a value of the wrong type") from None
    return asdict(SearchConfig.from_saved(config))


def load_state(out: str | Path) -> dict:
    """OUT/state.json, checked; its "config" is the saved config with the values of fields it predates."""
    path = Path(out) / "state.json"
    if not path.is_file():
        raise LongRopeError(f"nothing to resume: {path} does not exist")
    state = _read(path, "search state")
    if state.get("format") != FORMAT:
        raise LongRopeError(f"{path} is not a longrope search state")
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("evolution"), dict):
        raise LongRopeError(f"{path} is not a readable longrope search state (bad config or evolution)")
    state["config"] = _config(path, state["config"])
    return state


def read_descent(out: str | Path) -> dict | None:
    """OUT/descent.json ({"config", "descent"}) or None; a broken file is a one-line error."""
    path = Path(out) / DESCENT_FILE
    if not path.is_file():
        return None
    doc = _read(path, "descent state")
    if not isinstance(doc.get("config"), dict) or not isinstance(doc.get("descent"), dict):
        raise LongRopeError(f"{path} is not a longrope descent state")
    doc["config"] = _config(path, doc["config"])
    return doc


def descent_only(out: str | Path) -> bool:
    """A search killed during its descent: descent.json but no state.json yet."""
    return not (Path(out) / "state.json").is_file() and (Path(out) / DESCENT_FILE).is_file()


def read_sweep(out: str | Path) -> dict | None:
    """OUT/sweep.json, or None; a broken file is a one-line error."""
    path = Path(out) / SWEEP_FILE
    if not path.is_file():
        return None
    doc = _read(path, "critical-dimension sweep")
    if doc.get("format") != SWEEP_FORMAT or not isinstance(doc.get("config"), dict):
        raise LongRopeError(f"{path} is not a longrope critical-dimension sweep")
    doc["config"] = _config(path, doc["config"])
    return doc


def saved_config(out: str | Path) -> SearchConfig:
    """The settings of the search in `out` to resume: from sweep.json (a critical-dimension sweep),
    state.json, or descent.json when the run was stopped during its descent (before the first
    state.json)."""
    doc = read_sweep(out) or (read_descent(out) if descent_only(out) else load_state(out))
    return SearchConfig.from_saved(doc["config"])


def write_state(out: Path, doc: dict, scaling, *, final: bool) -> None:
    """history.jsonl and the factors (factors.json once `final`, else factors.partial.json), then
    state.json; descent.json goes, as state.json holds the descent from now on."""
    scaling.save(out / ("factors.json" if final else PARTIAL))
    if final:
        (out / PARTIAL).unlink(missing_ok=True)
    cfg = doc["config"]
    docs = {"full": cfg["docs"], "screen": cfg["screen_docs"]}
    lines = [json.dumps({"generation": e["generation"], "fidelity": e["fidelity"], "docs": docs[e["fidelity"]],
                         "ppl": e["score"], **e["candidate"]}) for e in doc["evolution"]["evaluations"]]
    write_text(out / "history.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    write_json(out / "state.json", doc)
    (out / DESCENT_FILE).unlink(missing_ok=True)


def best_of(doc: dict) -> Candidate:
    """The best candidate of a state document."""
    return Candidate.from_json(doc["evolution"]["parents"][0][0])
