"""Search progress on rank 0 (`longrope.progress`): a bar over sample forward passes, whose total is
the most the settings can take (the initial population and every generation in full; early stopping
and cached scores make it shorter), and one plain line per generation outside a terminal."""
from __future__ import annotations

import math

from ..progress import Progress


class SearchProgress:
    def __init__(self, on: bool, cfg, *, baselines: int, done_generations: int | None, world: int):
        per_gen = cfg.mutations + cfg.crossovers
        full = math.ceil(cfg.promote * per_gen) if cfg.screen_docs else per_gen
        gen_cost = full * cfg.docs + (per_gen * cfg.screen_docs if cfg.screen_docs else 0)
        if done_generations is None:
            total = (baselines + cfg.population + cfg.descent_steps) * cfg.docs + cfg.iterations * gen_cost
        else:
            total = max(0, cfg.iterations - done_generations) * gen_cost
        self.cfg, self.objective, self.descent, self.last = cfg, None, 0, None
        self.p = Progress(math.ceil(total / world), f"search {cfg.preset}", "pass", enabled=on, every=0)
        if on and not self.p.tty:
            self.p.line(f"up to {cfg.iterations} generations at {cfg.target_length} tokens on {cfg.docs} "
                        "documents (the total is an upper bound)")

    def tick(self) -> None:
        done = self.descent + (self.objective.forward_passes if self.objective is not None else 0)
        if done > self.p.n:
            self.p.update(done - self.p.n)

    def descent_tick(self) -> None:
        """One (forward + backward) sample pass of the descent; the bar counts it as one pass."""
        self.descent += 1
        self.tick()

    def generation(self, evo: dict) -> None:
        if evo["generation"] == self.last:
            return  # the final record repeats the last generation
        self.last = evo["generation"]
        h = evo["history"][-1]
        best = float(h["best_score"])
        self.p.set_postfix_str(f"gen {evo['generation']} best ppl {best:.3f}")
        self.p.line(f"generation {evo['generation']}/{self.cfg.iterations}, best ppl {best:.4f}, "
                    f"{h.get('evaluations', '?')} full + {h.get('screened', 0)} screening evaluations")

    def close(self) -> None:
        self.p.close(done=True)
