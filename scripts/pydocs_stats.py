"""Per-document SmolLM2 token counts of `--data pydocs`, and the files the tabular rule removes from
the built-in corpus, per split. Writes docs/results/smollm2/corpus.json.

    python scripts/pydocs_stats.py
"""
from __future__ import annotations

import json
import time

from longrope.data import prose
from longrope.data.documents import SPLITS
from longrope.data.sources import is_tabular, load_builtin, split_of, stdlib_files
from longrope.io import write_json
from longrope.models import load_tokenizer

t0 = time.process_time()
tok = load_tokenizer("smollm2")
rows = prose.pydocs_stats(tok)
removed = {s: [] for s in SPLITS}
for rel, path in stdlib_files():
    if is_tabular(path.read_text(encoding="utf-8", errors="replace")):
        removed[split_of(rel)].append(rel)
out = {"pydocs": rows,
       "pydocs_per_split": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
       "pydocs_min_tokens": min(r["tokens"] for r in rows),
       "builtin_after_filter": {s: {"docs": len(d := load_builtin(s)), "chars": sum(len(x.text) for x in d),
                                    "tabular": len(removed[s])} for s in SPLITS},
       "builtin_removed": removed,
       "cpu_s": time.process_time() - t0}
write_json("docs/results/smollm2/corpus.json", out)
print(json.dumps({k: v for k, v in out.items() if k not in ("pydocs", "builtin_removed")}, indent=1))
