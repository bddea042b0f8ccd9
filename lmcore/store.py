"""The content-keyed store: every stage's output is an immutable directory.

Why: the pipeline must never recompute finished work and never mistake half
written work for finished work, whatever happens to Prefect's database, a
killed process or a concurrent run of the same config.

* ``stage_key(stage, inputs, config, code_version)`` hashes exactly what a
  stage's output depends on: the stage name, its inputs' content keys (for raw
  files: :func:`file_fingerprint`, a blake2b of the bytes), its config section
  as canonical JSON and the stage module's ``STAGE_VERSION``.
* ``Store.build(...)`` writes into ``<store>/<stage>/.tmp-<key>-<uuid>/``, writes
  ``manifest.json`` last (files with sha256, input keys = lineage, summary) and
  renames the directory to ``<store>/<stage>/<key>/``. ``os.rename`` is atomic
  on one filesystem, so a directory named by its key always holds a complete
  output. If a concurrent run renamed first, ours is discarded and theirs used.
* A refresh of a stage whose key did not change writes a new directory, then
  swaps: the old one is renamed aside and the new one renamed in (a reader
  racing the swap sees either the old output, the new output or, for an
  instant, none, never a partial one).
* A killed stage leaves only a ``.tmp-*`` directory; :meth:`Store.clean_stale`
  removes the ones whose writer process is dead (same host) or that are older
  than ``stale_after`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from lmcore.errors import StoreError

MANIFEST = "manifest.json"
OWNER_FILE = ".owner.json"
KEY_LENGTH = 20  # hex characters of the blake2b digest used as a directory name
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def file_fingerprint(path: str | Path) -> str:
    """Content key of a raw file: blake2b over its bytes (streamed, about 1 GB/s).

    Path, size and mtime are not content: a copied or touched file keeps its key,
    an edited one of the same size gets a new one.
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stage_key(stage: str, inputs: Iterable[str] | dict[str, Any], config: Any, code_version: str) -> str:
    """The store key of one stage output. ``inputs`` are upstream keys or file fingerprints."""
    payload = canonical_json({"stage": stage, "inputs": inputs if isinstance(inputs, dict) else list(inputs),
                              "config": config, "code_version": str(code_version)})
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=KEY_LENGTH // 2).hexdigest()


def list_files(root: Path) -> list[dict[str, Any]]:
    """Every file under ``root`` (except the manifest) with its size and sha256, sorted by name."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in (MANIFEST, OWNER_FILE):
            continue
        out.append({"name": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class StageOutput:
    """A finished stage directory and its manifest."""

    dir: Path
    manifest: dict[str, Any]

    @property
    def key(self) -> str:
        return self.manifest["key"]

    @property
    def summary(self) -> dict[str, Any]:
        return self.manifest.get("summary", {})


class Store:
    """``<root>/<stage>/<key>/`` directories, each complete or absent."""

    def __init__(self, root: str | Path, stale_after: float = 6 * 3600.0):
        self.root = Path(root)
        self.stale_after = stale_after

    # ------------------------------------------------------------------ reading
    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def exists(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / MANIFEST).is_file()

    def get(self, stage: str, key: str) -> StageOutput | None:
        """The finished output, or None when the stage has not completed for this key."""
        directory = self.path(stage, key)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            return None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{manifest_path}: unreadable manifest ({exc}); delete the directory "
                             f"or rerun with --refresh {stage}") from None
        return StageOutput(directory, manifest)

    def verify(self, stage: str, key: str) -> list[str]:
        """Names of files whose sha256 no longer matches the manifest (empty = intact)."""
        out = self.get(stage, key)
        if out is None:
            raise StoreError(f"{self.path(stage, key)}: no finished output")
        bad = []
        for entry in out.manifest.get("files", []):
            path = out.dir / entry["name"]
            if not path.is_file() or sha256_file(path) != entry["sha256"]:
                bad.append(entry["name"])
        return bad

    # ------------------------------------------------------------------ writing
    def build(self, stage: str, key: str, fn: Callable[[Path], dict[str, Any]], *,
              inputs: dict[str, Any] | list[str] | None = None, config: Any = None,
              code_version: str = "0", refresh: bool = False) -> tuple[StageOutput, bool]:
        """Return ``(output, computed)``: the existing output, or ``fn(tmp_dir)`` made permanent.

        ``fn`` writes its files into the temporary directory and returns a JSON-able
        summary. With ``refresh`` the stage is recomputed and replaces any existing output.
        """
        if not refresh:
            existing = self.get(stage, key)
            if existing is not None:
                return existing, False
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale(stage)
        tmp = stage_dir / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "started": time.time()}))
        try:
            started = time.perf_counter()
            summary = fn(tmp) or {}
            seconds = time.perf_counter() - started
            manifest = {
                "stage": stage, "key": key, "inputs": inputs or {}, "config": config,
                "code_version": str(code_version),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "seconds": round(seconds, 4), "summary": summary, "files": list_files(tmp),
            }
            (tmp / OWNER_FILE).unlink()
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._publish(stage, key, tmp, refresh), True

    def _publish(self, stage: str, key: str, tmp: Path, replace: bool) -> StageOutput:
        target = self.path(stage, key)
        if replace and target.exists():
            aside = target.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                aside = None
            os.rename(tmp, target)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        else:
            try:
                os.rename(tmp, target)
            except OSError:
                # A concurrent run finished the same key first: its output is as good as ours.
                if not (target / MANIFEST).is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        out = self.get(stage, key)
        if out is None:  # pragma: no cover - only if someone deletes it under us
            raise StoreError(f"{target}: vanished right after it was written")
        return out

    def clean_stale(self, stage: str) -> list[Path]:
        """Remove ``.tmp-*``/``.old-*`` directories left by dead or long-gone writers; returns them."""
        stage_dir = self.root / stage
        if not stage_dir.is_dir():
            return []
        removed = []
        now = time.time()
        for entry in stage_dir.iterdir():
            if not entry.is_dir() or not entry.name.startswith((".tmp-", ".old-")):
                continue
            if self._is_stale(entry, now):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def _is_stale(self, entry: Path, now: float) -> bool:
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:
            return False
        if entry.name.startswith(".old-") or age > self.stale_after:
            return True
        try:
            owner = json.loads((entry / OWNER_FILE).read_text())
        except (OSError, ValueError):
            return age > 60.0  # no owner file yet: only a just-created dir may lack it
        return owner.get("host") == socket.gethostname() and not _pid_alive(int(owner.get("pid", -1)))
