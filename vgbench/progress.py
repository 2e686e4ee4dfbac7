"""A session's progress: cases done of all, the running ones' epochs, and an ETA from the
scheduler's cost model (session.case_cost) calibrated on the cases that finished.

Workers on this machine tell the controller each finished epoch through one small file per
case in a folder (NOTES), which the controller reads when it redraws its line; workers on
other hosts do not (their cases show as running, without epochs). No pytest here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vgbench import files, registry
from vgbench.session import Settings, case_cost

NOTES = ".progress"
"""The folder under --vg-out where local workers note their cases' epochs."""


def note(folder: str | Path, case_id: str, done: int, total: int) -> None:
    """A worker's note: `done` of `total` epochs of this case have finished (the folder is
    made by the first note: a session without cases leaves nothing behind)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    files.write_text(Path(folder) / case_id, f"{done} {total}\n")


def read_notes(folder: str | Path) -> dict[str, tuple[int, int]]:
    """{case id: (epochs done, epochs in all)} of the notes in folder (none: {})."""
    out = {}
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return out
    for e in entries:
        try:
            done, total = Path(e.path).read_text().split()
            out[e.name] = (int(done), int(total))
        except (OSError, ValueError):  # being replaced right now, or not a note
            continue
    return out


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """What the controller knows of the session's cases, and its one line about them.

    workers: how many cases run at once (the ETA divides the remaining work by it)."""

    def __init__(self, settings: Settings, workers: int = 1, clock=time.monotonic):
        self.clock = clock
        self.t0 = clock()
        self.workers = max(1, workers)
        self.cost = {c.id: case_cost(settings, c) for c in settings.cases}
        self.epochs = {c.id: settings.config(registry.get(c.remedy), c.seed,
                                             c.depth).total_epochs for c in settings.cases}
        self.total = len(self.cost)
        """Cases of the session (the controller sets it to those collected)."""
        self.running: dict[str, float] = {}
        """Case id: when it started."""
        self.done: set[str] = set()
        self.seconds = 0.0
        """Epoch seconds of the finished cases (their training, summed)."""
        self.done_cost = 0.0
        self.notes: dict[str, tuple[int, int]] = {}

    def expect(self, case_ids) -> None:
        """The session's cases are these (those collected: a -k or node id may pick some)."""
        ids = set(case_ids)
        self.cost = {c: v for c, v in self.cost.items() if c in ids}
        self.total = len(self.cost)

    def started(self, case_id: str) -> None:
        if case_id in self.cost and case_id not in self.done:
            self.running[case_id] = self.clock()

    def finished(self, case_id: str, epoch_seconds: float | None) -> None:
        """A case ended (epoch_seconds: its training time; None: it crashed)."""
        if case_id not in self.cost or case_id in self.done:
            return
        self.running.pop(case_id, None)
        self.notes.pop(case_id, None)
        self.done.add(case_id)
        if epoch_seconds:
            self.seconds += epoch_seconds
            self.done_cost += self.cost[case_id]

    def epoch(self, case_id: str, done: int, total: int) -> None:
        """A running case finished `done` of its `total` epochs."""
        if case_id in self.running:
            self.notes[case_id] = (done, total)

    def eta(self) -> float | None:
        """Seconds until every case is done, or None before the first case finished."""
        if not self.done_cost:
            return None
        rate = self.seconds / self.done_cost  # seconds per unit of cost, on one worker
        left = 0.0
        for cid, cost in self.cost.items():
            if cid in self.done:
                continue
            done, total = self.notes.get(cid, (0, 0))
            left += cost * (1 - done / total) if total else cost
        return left * rate / min(self.workers, max(1, self.total - len(self.done)))

    def line(self, width: int = 120) -> str:
        """'vgbench: 7/23 cases done, running relu-seed42 3/5, adam-seed42 | 1 min 05 s,
        about 2 min 10 s left', cut to width."""
        parts = []
        for cid in sorted(self.running, key=self.running.get):
            done, total = self.notes.get(cid, (None, self.epochs.get(cid)))
            parts.append(cid if done is None else f"{cid} {done}/{total}")
        eta = self.eta() if len(self.done) < self.total else None
        tail = (f" | {duration(self.clock() - self.t0)}"
                + (f", about {duration(eta)} left" if eta is not None else ""))
        head = f"vgbench: {len(self.done)}/{self.total} cases done"
        body = f", running {', '.join(parts)}" if parts else ""
        room = width - len(head) - len(tail) - 1
        if len(body) > room:
            body = body[:max(0, room - 3)] + "..."
        return (head + body + tail)[:max(1, width - 1)]

