"""The evolutionary search of LongRoPE factors: `space` (candidates and moves) and `evolution`
(the model-free algorithm) know nothing of models; `objective` and `runner` connect them to a
model, its data and `torch.distributed`; `longrope search` is the command."""
from .evolution import PRESETS, Result, evolve
from .space import Candidate, Space

__all__ = ["Candidate", "PRESETS", "Result", "Space", "evolve"]
