"""The content-keyed store: every stage's output is an immutable directory, and its partial work survives.

Why: the pipeline must never recompute finished work, never mistake half-written work for
finished work, and never throw away work in progress: a training run killed at hour five
continues from its last checkpoint, whatever happened to Prefect's database, the process or a
concurrent run of the same config.

* ``stage_key(stage, inputs, config, code_version)`` hashes exactly what a stage's output
  depends on: the stage name, its inputs' content keys (for raw files: :func:`file_fingerprint`,
  a blake2b of the bytes), its config section as canonical JSON and the stage module's
  ``STAGE_VERSION``.
* ``Store.build(...)`` computes a missing output in ``<store>/<stage>/.work-<key>/``, a name
  derived from the key, while holding the OS lock ``.work-<key>.lock`` beside it
  (:mod:`lmcore.locks`; the lock file exists only while someone holds it). It writes ``manifest.json`` last (every file with size, mtime and
  sha256; input keys = lineage; summary) and renames the directory to ``<store>/<stage>/<key>/``:
  ``os.rename`` is atomic, so a directory named by its key always holds a complete output.
* One writer per key: a second run that needs the same key waits for the lock (saying whom it
  waits for), then finds the output finished, or takes over the work if the holder died.
* Resumable stages (training): the work directory is kept when the computation fails or is
  interrupted, and the next build of the same key hands it back to the stage function, which
  continues from what it finds there. Other stages start their work directory afresh.
* Nothing is removed automatically. Work directories nobody holds are "abandoned partial work";
  ``lmcore store gc`` (:meth:`Store.abandoned`) lists and frees them.
* Reuse is verified: before an output is handed out, its files are checked against the manifest
  cheaply (size and mtime; sha256 only where those differ, or always with ``deep``). A modified
  output is rebuilt (a resumable one continues from its own checkpoints) and a warning names the
  file: it is never used silently.
* A refresh of a stage whose key did not change writes a new output, then swaps it in (a reader
  racing the swap sees the old output, the new one or, for an instant, none; never a partial one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from lmcore.errors import StoreError
from lmcore.locks import FileLock, describe, is_locked

log = logging.getLogger("lmcore.store")

MANIFEST = "manifest.json"
WORK_PREFIX = ".work-"
PARTS_PREFIX = ".parts-"  # a data stage's parsed parts (lmcore.data.parts), held under a lock like work dirs
LOCK_SUFFIX = ".lock"
_LOCKED_PREFIXES = (WORK_PREFIX, PARTS_PREFIX)
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
    """Hex sha256 of a file's bytes (streamed); what manifests and checkpoint metadata record."""
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
    """Every file under ``root`` (except the manifest) with its size, mtime and sha256, sorted by name."""
    out = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == MANIFEST:
            continue
        st = path.stat()
        out.append({"name": rel, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)})
    return out


def changed_files(directory: Path, files: list[dict[str, Any]], deep: bool = False) -> tuple[list[str], bool]:
    """``(names of files that differ from their manifest entries, whether any mtime was stale)``.

    Cheap by default: a file whose size and mtime match is taken as unchanged; sha256 is computed
    only where the mtime differs (or for every file with ``deep``). A file whose bytes still match
    but whose mtime moved (a copied store) counts as unchanged and flags the mtimes as stale.
    """
    bad, stale = [], False
    for entry in files:
        path = directory / entry["name"]
        try:
            st = path.stat()
        except FileNotFoundError:
            bad.append(entry["name"])
            continue
        if st.st_size != entry.get("bytes", st.st_size):
            bad.append(entry["name"])
            continue
        recorded = entry.get("mtime_ns")
        if not deep and (recorded is None or recorded == st.st_mtime_ns):
            continue  # manifests written before mtimes were recorded: size only, unless deep
        if sha256_file(path) != entry["sha256"]:
            bad.append(entry["name"])
        elif recorded != st.st_mtime_ns:
            stale = True
    return bad, stale


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


@dataclass(frozen=True)
class Abandoned:
    """Partial work no live process holds: what ``lmcore store gc`` would free."""

    path: Path
    bytes: int
    what: str


class Store:
    """``<root>/<stage>/<key>/`` directories, each complete or absent; work in ``.work-<key>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ reading
    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def work_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{WORK_PREFIX}{key}"

    def lock_path(self, stage: str, key: str) -> Path:
        return self.root / stage / f"{WORK_PREFIX}{key}{LOCK_SUFFIX}"

    def parts_path(self, stage: str, key: str) -> Path:
        """Where workers write a data stage's parsed parts before the stage reduces them (its lock file:
        this path + ``.lock``, held by the run that orchestrates them)."""
        return self.root / stage / f"{PARTS_PREFIX}{key}"

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

    def check(self, stage: str, key: str, deep: bool = False) -> list[str]:
        """Names of the output's files that no longer match its manifest (empty = intact).

        Cheap (size and mtime) unless ``deep`` (sha256 of every file); see :func:`changed_files`.
        When only mtimes moved (bytes intact) the manifest's mtimes are brought up to date.
        """
        out = self.get(stage, key)
        if out is None:
            raise StoreError(f"{self.path(stage, key)}: no finished output")
        bad, stale = changed_files(out.dir, out.manifest.get("files", []), deep)
        if stale and not bad:
            self._refresh_mtimes(out)
        return bad

    def verify(self, stage: str, key: str) -> list[str]:
        """:meth:`check` with sha256 of every file."""
        return self.check(stage, key, deep=True)

    def entries(self) -> list[tuple[str, str]]:
        """``(stage, key)`` of every finished output, sorted."""
        if not self.root.is_dir():
            return []
        return sorted((stage_dir.name, out.name) for stage_dir in self.root.iterdir() if stage_dir.is_dir()
                      for out in stage_dir.iterdir() if (out / MANIFEST).is_file() and not out.name.startswith("."))

    # ------------------------------------------------------------------ writing
    def build(self, stage: str, key: str, fn: Callable[[Path], dict[str, Any]], *,
              inputs: dict[str, Any] | list[str] | None = None, config: Any = None, code_version: str = "0",
              refresh: bool = False, resumable: bool = False, deep_verify: bool = False,
              on_wait: Optional[Callable[[str], None]] = None) -> tuple[StageOutput, bool]:
        """Return ``(output, computed)``: the existing output, or ``fn(work_dir)`` made permanent.

        ``fn`` writes its files into the work directory and returns a JSON-able summary. With
        ``refresh`` the stage is recomputed from scratch and replaces any existing output.
        ``resumable`` keeps the work directory when ``fn`` fails, for the next build to continue.
        ``on_wait(message)`` is told when another live process holds this key.
        """
        if not refresh:
            existing = self._reusable(stage, key, deep_verify)
            if isinstance(existing, StageOutput):
                return existing, False
        stage_dir = self.root / stage
        stage_dir.mkdir(parents=True, exist_ok=True)

        def waiting(note: dict[str, Any]) -> None:
            message = f"{stage} {key}: waiting for {describe(note)}, which is computing it"
            log.info("%s", message)
            if on_wait is not None:
                on_wait(message)

        lock = FileLock(self.lock_path(stage, key))
        lock.acquire(on_wait=waiting)
        try:
            work = self.work_path(stage, key)
            if not refresh:
                existing = self._reusable(stage, key, deep_verify)  # finished while we waited?
                if isinstance(existing, StageOutput):
                    return existing, False
                if isinstance(existing, list):
                    self._reopen_damaged(stage, key, work, resumable, existing)
            if (refresh or not resumable) and work.exists():
                shutil.rmtree(work)
            work.mkdir(exist_ok=True)
            (work / MANIFEST).unlink(missing_ok=True)
            try:
                started = time.perf_counter()
                summary = fn(work) or {}
                manifest = {
                    "stage": stage, "key": key, "inputs": inputs or {}, "config": config,
                    "code_version": str(code_version),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "seconds": round(time.perf_counter() - started, 4), "summary": summary,
                    "files": list_files(work),
                }
                (work / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            except BaseException:
                if not resumable:
                    shutil.rmtree(work, ignore_errors=True)
                raise
            return self._publish(stage, key, work), True
        finally:
            lock.remove()  # removed while held: a waiter re-checks the path and locks afresh

    def _reusable(self, stage: str, key: str, deep: bool) -> "StageOutput | list[str] | None":
        """The output if present and intact; the names of its modified files if present but changed;
        None if absent."""
        out = self.get(stage, key)
        if out is None:
            return None
        bad = self.check(stage, key, deep)
        return bad or out

    def _reopen_damaged(self, stage: str, key: str, work: Path, resumable: bool, bad: list[str]) -> None:
        """Take a modified output out of service: a resumable one becomes its work directory again
        (its own checkpoints verify themselves), any other one is discarded."""
        target = self.path(stage, key)
        log.warning("%s: %s changed since the %s stage wrote it; rebuilding it (a modified output is never used)",
                    target / bad[0], f"this and {len(bad) - 1} other file(s)" if len(bad) > 1 else "the file", stage)
        if resumable:
            if work.exists():
                shutil.rmtree(work)
            (target / MANIFEST).unlink(missing_ok=True)
            os.rename(target, work)
        else:
            aside = target.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            os.rename(target, aside)
            shutil.rmtree(aside, ignore_errors=True)

    def _publish(self, stage: str, key: str, work: Path) -> StageOutput:
        target = self.path(stage, key)
        if target.exists():  # a refresh: swap the new output in, then drop the old one
            aside = target.parent / f".old-{key}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                aside = None
            os.rename(work, target)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(work, target)
        out = self.get(stage, key)
        if out is None:  # pragma: no cover - only if someone deletes it under us
            raise StoreError(f"{target}: vanished right after it was written")
        return out

    def _refresh_mtimes(self, out: StageOutput) -> None:
        files = []
        for entry in out.manifest.get("files", []):
            try:
                files.append({**entry, "mtime_ns": (out.dir / entry["name"]).stat().st_mtime_ns})
            except FileNotFoundError:
                files.append(entry)
        manifest = {**out.manifest, "files": files}
        tmp = out.dir / f".{MANIFEST}.{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
            os.replace(tmp, out.dir / MANIFEST)
        except OSError as exc:  # a read-only store still works, it just checks sha256 each time
            tmp.unlink(missing_ok=True)
            log.debug("could not refresh the mtimes of %s: %s", out.dir / MANIFEST, exc)

    # ------------------------------------------------------------------ partial work
    def abandoned(self) -> list[Abandoned]:
        """Work directories (and their lock files) that no live process holds, and leftovers of
        interrupted swaps: what ``lmcore store gc`` frees. Live work is never listed."""
        found: list[Abandoned] = []
        if not self.root.is_dir():
            return found
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for entry in sorted(stage_dir.iterdir()):
                name = entry.name
                if name.startswith(_LOCKED_PREFIXES) and name.endswith(LOCK_SUFFIX):
                    if not (stage_dir / name[: -len(LOCK_SUFFIX)]).exists() and not is_locked(entry):
                        found.append(Abandoned(entry, 0, f"{stage_dir.name}: unused lock file"))
                elif name.startswith(_LOCKED_PREFIXES) and entry.is_dir():
                    if not is_locked(Path(f"{entry}{LOCK_SUFFIX}")):
                        prefix = WORK_PREFIX if name.startswith(WORK_PREFIX) else PARTS_PREFIX
                        key = name[len(prefix):]
                        note = _work_note(entry) if prefix == WORK_PREFIX else "parsed parts of an unfinished run"
                        found.append(Abandoned(entry, _tree_bytes(entry), f"{stage_dir.name} {key}: {note}"))
                elif name.startswith((".old-", ".tmp-")) and entry.is_dir() and not _legacy_writer_alive(entry):
                    found.append(Abandoned(entry, _tree_bytes(entry), f"{stage_dir.name}: leftover of an "
                                                                      "interrupted write"))
        return found

    def remove_abandoned(self, entry: Abandoned) -> bool:
        """Delete one :meth:`abandoned` entry if it is still abandoned; False if a writer took it meanwhile."""
        path = entry.path
        if not path.name.startswith(_LOCKED_PREFIXES):  # a leftover of an interrupted swap or an old-style write
            shutil.rmtree(path, ignore_errors=True)
            return True
        lock = FileLock(path if path.name.endswith(LOCK_SUFFIX) else Path(f"{path}{LOCK_SUFFIX}"))
        if not lock.acquire(blocking=False):
            return False
        try:
            if path.is_dir():
                shutil.rmtree(path)
        finally:
            lock.remove()  # deleted while held, so no other process can be holding it
        return True



def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _work_note(work: Path) -> str:
    """What a work directory holds, for ``store gc``: the checkpoints of a training run, or files."""
    steps = sorted(p.name for p in (work / "checkpoints").glob("step-*")) if (work / "checkpoints").is_dir() else []
    if steps:
        return f"abandoned training, {len(steps)} checkpoint(s), newest {steps[-1]}"
    return "abandoned partial output"


def _legacy_writer_alive(entry: Path) -> bool:
    """``.tmp-*`` directories of stores written before work directories: alive if their owner pid is."""
    try:
        owner = json.loads((entry / ".owner.json").read_text())
    except (OSError, ValueError):
        return False
    import socket

    if owner.get("host") != socket.gethostname():
        return True  # another host's writer: cannot tell, so keep it
    try:
        os.kill(int(owner.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
