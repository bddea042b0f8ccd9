"""Small files that appear whole or not at all: written under a private name beside the target, then renamed.

Why: readers elsewhere act on these files as soon as they exist (a worker reads the parts plan, a
later run trusts a finished part's counts, a node joins on a rendezvous ticket, every run reads the
hardware cache), so a half-written file must never be visible, and a writer killed mid-write must
leave the old file or none. ``os.replace`` within one directory is atomic; the private name carries
the pid so two writers never share a temporary file.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """``path`` holds ``text`` (UTF-8) once this returns; before, it holds what it held."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
