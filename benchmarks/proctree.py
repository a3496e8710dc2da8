"""The process tree of a server under measurement, read from /proc (shared by the benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (Moorage workers and the migration child are forked)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out
