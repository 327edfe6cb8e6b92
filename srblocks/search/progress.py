"""Progress of a study on stderr for a person watching it (a bar on a TTY, else throttled lines)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

__all__ = ["SearchProgress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class SearchProgress:
    """Progress of a study on stderr for a person watching it.

    On a TTY: one bar over the study's trials that also moves during a trial (the fraction of its training done),
    with the study's ETA, the running trial's iteration x/N and PSNR (dB) and the best value so far. Not a TTY
    (logs, CI, ``nohup``): one concise line at most every ``every`` seconds, and one at the end. ETA = time so far
    / trials done in this session (fractions included) x trials left, so it assumes the rest cost the same."""

    def __init__(self, total: int, done: int, *, every: float = 30.0, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.total, self.done0, self.done, self.every = total, done, done, every
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self.last_line = -math.inf
        self.last_text = ""
        self.running: dict[int, tuple[float, str]] = {}
        self.best = ""
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="search", unit="trial", file=self.stream,
                            dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} "
                                                           "trials [{elapsed}, {postfix}]")

    def _fraction(self) -> float:
        return self.done + sum(f for f, _ in self.running.values())

    def eta(self) -> float | None:
        """Seconds left for the whole study, None before anything was done."""
        made = self._fraction() - self.done0
        if made <= 0:
            return None
        return (time.monotonic() - self.t0) / made * max(0.0, self.total - self._fraction())

    def _status(self) -> str:
        eta = self.eta()
        parts = [f"ETA {format_duration(eta)}" if eta is not None else "ETA ?"]
        parts += [f"trial {n}: {text}" for n, (_, text) in sorted(self.running.items()) if text]
        if self.best:
            parts.append(f"best {self.best}")
        return ", ".join(parts)

    def update(self, *, done: int | None = None, running: dict[int, tuple[float, str]] | None = None,
               best: str | None = None, force: bool = False) -> None:
        """``done``: trials finished; ``running``: trial number -> (fraction of it done 0..1, short text)."""
        if done is not None:
            self.done = done
        if running is not None:
            self.running = running
        if best is not None:
            self.best = best
        if self.bar is not None:
            self.bar.n = min(float(self.total), self._fraction())
            self.bar.set_postfix_str(self._status(), refresh=True)
            return
        now = time.monotonic()
        if force or now - self.last_line >= self.every:
            self.last_line = now
            line = f"{self.done}/{self.total} trials done, {format_duration(now - self.t0)} elapsed, {self._status()}"
            if not (force and line == self.last_text):  # the closing line only when it says something new
                print(f"search: {line}", file=self.stream, flush=True)
            self.last_text = line

    def training(self, number: int, fraction: float, text: str) -> None:
        self.running = {number: (min(1.0, max(0.0, fraction)), text)}
        self.update()

    def close(self) -> None:
        self.running = {}
        if self.bar is not None:
            self.update()
            self.bar.close()
        else:
            self.update(force=True)
