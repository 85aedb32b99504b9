"""Following JSON-lines files while their writers append to them (the clients' history parts,
the environment's timeline): each poll() returns the complete lines written since the last one."""

from __future__ import annotations

import json
from pathlib import Path


class JsonlTail:
    """New complete JSON lines of the files matching some globs, per poll(); a line not yet ended
    waits for its newline. `skip` drops lines by a byte test before parsing (the clients' invoke
    entries: only completions are counted)."""

    def __init__(self, root: Path, patterns: tuple[str, ...], exclude: tuple[str, ...] = (), skip: bytes | None = None):
        self.root = Path(root)
        self.patterns = patterns
        self.exclude = set(exclude)
        self.skip = skip
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def files(self) -> list[Path]:
        found: set[Path] = set()
        for pat in self.patterns:
            found.update(p for p in self.root.glob(pat) if p.name not in self.exclude)
        return sorted(found)

    def poll(self) -> list[dict]:
        out: list[dict] = []
        for p in self.files():
            off = self._offsets.get(p, 0)
            try:
                with open(p, "rb") as f:
                    f.seek(off)
                    chunk = f.read()
            except OSError:
                continue
            if not chunk:
                continue
            self._offsets[p] = off + len(chunk)
            lines = (self._partial.pop(p, b"") + chunk).split(b"\n")
            if lines[-1]:
                self._partial[p] = lines[-1]
            for line in lines[:-1]:
                if not line.strip() or (self.skip is not None and self.skip in line):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue   # a line cut by a killed writer: not a record
                if isinstance(rec, dict):
                    out.append(rec)
        return out
