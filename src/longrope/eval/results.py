"""The typed result of `compare`: per method, per length, every evaluation's numbers, plus the
short-window cost and the run's meta. `to_json()` writes the layout results.json has always had
(`{"ppl": {M: {"L": v}}, "passkey": ..., "short": ..., "meta": ...}`), so older files load with
`from_json()`.

Adding an evaluation: give `MethodResult` a field (a {length: value} or {name: value} dict), fill it
in the evaluation's module, and add its table to eval/report.py. Nothing else reads the fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# method-level tables kept per length in results.json (key -> MethodResult attribute)
_PER_LENGTH = ("ppl", "ppl_detail", "passkey", "passkey_ci", "passkey_depth", "seconds")


@dataclass
class MethodResult:
    spec: str                                                      # what the label means, e.g. "yarn:8"
    model: str | None = None                                       # which model scored it, when several
    ppl: dict[int, float] = field(default_factory=dict)            # length -> perplexity
    ppl_detail: dict[int, dict] = field(default_factory=dict)      # length -> PerplexityResult.to_dict()
    passkey: dict[int, float] = field(default_factory=dict)        # length -> accuracy (empty: not run)
    passkey_ci: dict[int, list[float]] = field(default_factory=dict)  # length -> 95% Wilson [lo, hi]
    passkey_depth: dict[int, dict[str, float]] = field(default_factory=dict)  # length -> depth -> acc
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)  # harness task -> metrics (issue 14)
    seconds: dict[int, float] = field(default_factory=dict)        # length -> seconds spent on it
    short_ppl: float | None = None                                 # perplexity at the short length


@dataclass
class CompareResult:
    methods: dict[str, MethodResult]
    short_length: int
    unscaled_short_ppl: float
    meta: dict[str, Any] = field(default_factory=dict)

    # -- views ---------------------------------------------------------------------------------
    def table(self, key: str) -> dict[str, dict[str, Any]]:
        """{method: {"length": value}} of one per-length field, methods without values left out."""
        return {m: {str(n): v for n, v in getattr(r, key).items()}
                for m, r in self.methods.items() if getattr(r, key)}

    def beyond_window(self) -> dict[str, dict[str, float]]:
        """{method: {"length": perplexity of the positions past the original window}} (truncate mode,
        lengths above the window only; empty for runs written before the column existed)."""
        window = self.meta.get("original_window")
        out: dict[str, dict[str, float]] = {}
        for m, r in self.methods.items():
            for n, d in r.ppl_detail.items():
                part = (d.get("by_range") or {}).get(f"{window}-{n}")
                if part and part.get("tokens"):
                    out.setdefault(m, {})[str(n)] = part["ppl"]
        return out

    @property
    def relative_cost(self) -> dict[str, float]:
        base = self.unscaled_short_ppl
        return {m: r.short_ppl / base - 1 for m, r in self.methods.items() if r.short_ppl is not None}

    @property
    def lengths(self) -> list[int]:
        return sorted({n for r in self.methods.values() for n in r.ppl})

    # -- editing (the pipeline joins two runs and renames the found factors) --------------------
    def rename(self, old: str, new: str) -> None:
        self.methods = {(new if m == old else m): r for m, r in self.methods.items()}

    def merge(self, other: "CompareResult", relabel: dict[str, str] | None = None) -> None:
        relabel = relabel or {}
        for m, r in other.methods.items():
            self.methods[relabel.get(m, m)] = r

    # -- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict:
        out: dict[str, Any] = {key: self.table(key) for key in _PER_LENGTH}
        out["short_ppl"] = {m: r.short_ppl for m, r in self.methods.items() if r.short_ppl is not None}
        out["tasks"] = {m: r.tasks for m, r in self.methods.items() if r.tasks}
        out["short"] = {"length": self.short_length, "unscaled_ppl": self.unscaled_short_ppl,
                        "relative_cost": self.relative_cost}
        meta = dict(self.meta)
        meta["methods"] = {m: r.spec for m, r in self.methods.items()}
        models = {m: r.model for m, r in self.methods.items() if r.model is not None}
        if models:
            meta["models"] = models
        out["meta"] = meta
        return out

    @classmethod
    def from_json(cls, doc: dict) -> "CompareResult":
        meta = dict(doc.get("meta", {}))
        specs = meta.pop("methods", {}) or {}
        models = meta.pop("models", {}) or {}
        names = list(dict.fromkeys([*specs, *doc.get("ppl", {})]))
        methods = {}
        for m in names:
            r = MethodResult(spec=specs.get(m, m), model=models.get(m),
                             short_ppl=(doc.get("short_ppl") or {}).get(m),
                             tasks=(doc.get("tasks") or {}).get(m, {}))
            for key in _PER_LENGTH:
                setattr(r, key, {int(n): v for n, v in (doc.get(key) or {}).get(m, {}).items()})
            methods[m] = r
        short = doc.get("short", {})
        return cls(methods, int(short.get("length", 0)), short.get("unscaled_ppl", float("nan")), meta)
