"""A small progress bar on stderr for the `studio` CLI (no dependencies).

On a terminal it redraws one line (``[#####-----] 3/7 draft_image``); when
stderr is not a terminal (CI logs, pipes, tests) it prints one line per step
instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None):
        self.total = max(int(total), 0)
        self.label = label
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self._last_width = 0

    def __enter__(self) -> Progress:
        self._draw("")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def advance(self, detail: str = "", steps: int = 1) -> None:
        self.done = min(self.total, self.done + steps) if self.total else self.done + steps
        self._draw(detail)

    def line(self, detail: str) -> str:
        elapsed = time.monotonic() - self.started
        if self.total:
            filled = BAR_WIDTH * self.done // self.total
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s"
        else:
            text = f"{self.label} {self.done} {elapsed:5.1f}s"
        return f"{text} {detail}".rstrip()

    def _draw(self, detail: str) -> None:
        text = self.line(detail)
        if self.interactive:
            padding = " " * max(0, self._last_width - len(text))
            self.stream.write("\r" + text + padding)
            self._last_width = len(text)
        elif self.done or detail:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive and self._last_width:
            self.stream.write("\n")
            self.stream.flush()
            self._last_width = 0
