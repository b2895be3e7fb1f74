"""Progress of long runs: a tqdm bar with a total and an ETA in a terminal, plain log lines elsewhere.

Outside a terminal (CI, nohup, a cluster job's log) a bar prints nothing useful, so `Progress`
writes one line every `every` units instead (and whenever the caller calls `line`), each with the
count, the total, the elapsed time and an ETA from the rate so far. The object speaks tqdm's
`update` / `set_postfix` / `close`, so a loop written for tqdm takes it unchanged.
"""
from __future__ import annotations

import sys
import time


def duration(seconds: float | None) -> str:
    """'42s', '3m05s', '2h07m'; '?' for None."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0,
                 enabled: bool = True, every: int | None = None, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.enabled = bool(enabled)
        isatty = getattr(self.stream, "isatty", None)
        self.tty = self.enabled and bool(isatty and isatty())
        self.every = every if every is not None else max(1, (total or 20) // 20)
        self.t0, self.n0, self.postfix = time.time(), initial, ""
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                            dynamic_ncols=True)

    def eta(self) -> float | None:
        done, left = self.n - self.n0, (self.total or 0) - self.n
        if done <= 0 or self.total is None:
            return None
        return max(0.0, left) * (time.time() - self.t0) / done

    def update(self, k: int = 1) -> None:
        before, self.n = self.n, self.n + k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled and self.every and (self.n // self.every > before // self.every or self.n == self.total):
            self.line()

    def set_postfix(self, **kw) -> None:
        self.set_postfix_str(", ".join(f"{k}={v}" for k, v in kw.items()))

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text)

    def line(self, text: str | None = None) -> None:
        """One plain log line (outside a terminal only): count/total, `text` (or the postfix), times."""
        if not self.enabled or self.tty:
            return
        count = f"{self.n:,}/{self.total:,} {self.unit}" if self.total else f"{self.n:,} {self.unit}"
        body = text if text is not None else self.postfix
        print(f"{self.desc}: {count}{', ' + body if body else ''}, {duration(time.time() - self.t0)} elapsed, "
              f"ETA {duration(self.eta())}", file=self.stream, flush=True)

    def close(self, *, done: bool = False) -> None:
        """`done`: the work ended below an upper-bound total (early stop): show it as complete."""
        if self.bar is not None:
            if done and self.total and self.n < self.total:
                self.bar.total = self.n
                self.bar.refresh()
            self.bar.close()
