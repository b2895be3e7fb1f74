"""The evolutionary search of LongRoPE factors: `space` (candidates and moves) and `evolution`
(the model-free algorithm) know nothing of models; `config` holds the settings and presets,
`setup.prepare` builds a run (model, data, space, seeds, objective), `objective` scores candidates
on a model under `torch.distributed`, `runner.run_search` runs it; `longrope search` is the command."""
from .config import PRESETS, SearchConfig
from .evolution import Result, Settings, evolve
from .space import Candidate, Space

__all__ = ["Candidate", "PRESETS", "Result", "SearchConfig", "Settings", "Space", "evolve"]
