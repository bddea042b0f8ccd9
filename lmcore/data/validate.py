"""Stage 1, validate: a verdict for every raw line, written as ``report.json`` + ``quarantine.jsonl``.

Nothing is changed or kept here; the shard stage re-streams the same files
with the same verdicts (``lmcore.data.verdicts``). The stage's job is to tell
a user what is wrong with their data, line by line, before any work is spent:

* ``report.json``: counts per reason and per file, length statistics and
  examples (see ``lmcore.data.report``).
* ``quarantine.jsonl``: one JSON object per rejected line (blank lines are not
  rejected): ``file``, ``line``, ``reason``, ``detail``, ``raw`` (the line as
  text, invalid UTF-8 bytes written as ``\\xNN``).

When more than ``data.max_invalid_fraction`` of the non-blank lines are
invalid, :class:`DataFormatError` is raised *after* both files are written.
Its message names the worst reasons with counts and an example ``file:line``.
Because the store discards a failed stage's temporary directory, ``report.json``
is then also copied to ``failure_report_path`` (default:
``<system temp>/lmcore-failed-validate/<out_dir name>/report.json``), and the
message names that copy; the error also carries ``.report`` (the dict) and
``.report_path``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Optional

import orjson

from lmcore.data.formats import Progress
from lmcore.data.records import BLANK, escape_raw
from lmcore.data.report import ReportBuilder, check_invalid_fraction
from lmcore.data.parts import stage_verdicts
from lmcore.data.verdicts import stage_inputs, verdict_settings
from lmcore.errors import DataFormatError

if TYPE_CHECKING:
    from lmcore.config import DataConfig

log = logging.getLogger(__name__)

STAGE_VERSION = "2"  # 2: unknown chat speakers are kept (and counted), not quarantined
REPORT_FILE = "report.json"
QUARANTINE_FILE = "quarantine.jsonl"


def run_validate(paths: Optional[Iterable[str | Path]], data_cfg: "DataConfig", out_dir: str | Path,
                 progress: Optional[Progress] = None, failure_report_path: str | Path | None = None,
                 enforce: bool = True, parts_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate ``paths`` (None = ``data.training_data_path``) plus ``data.eval_data_path``; write the report.

    Returns a JSON-able summary: ``totals``, ``reasons``, ``invalid_fraction``,
    ``kinds``, ``lengths``, ``files`` (per-file counts) and ``report`` (the
    report file name). ``progress(bytes_done, bytes_total)`` is called about
    once per MiB read. ``enforce=False`` skips the max_invalid_fraction check
    (the CLI uses it to print a failing report and decide the exit code itself). ``parts_dir``: the
    lines were parsed by workers into parts (``lmcore.data.parts``); the outputs are the same.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = stage_inputs(paths, data_cfg)
    builder = ReportBuilder(verdict_settings(data_cfg), files)
    with open(out / QUARANTINE_FILE, "wb", buffering=1 << 20) as quarantine:
        for v in stage_verdicts(files, data_cfg, progress, parts_dir):
            builder.add(v)
            if v.reason is not None and v.reason != BLANK:
                quarantine.write(orjson.dumps({"file": v.file.path, "line": v.line, "reason": v.reason,
                                               "detail": v.detail, "raw": escape_raw(v.raw)}) + b"\n")
    report = builder.to_dict()
    report["stage_version"] = STAGE_VERSION
    for path in report["empty_files"]:
        log.warning("%s holds no records (empty or only blank lines)", path)
    report_path = out / REPORT_FILE
    report_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    if enforce:
        try:
            check_invalid_fraction(report, data_cfg.max_invalid_fraction, str(report_path))
        except DataFormatError as err:
            keep = Path(failure_report_path) if failure_report_path is not None else (
                Path(tempfile.gettempdir()) / "lmcore-failed-validate" / out.resolve().name / REPORT_FILE)
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(report_path, keep)
            err.args = (str(err).replace(str(report_path), str(keep)),)
            err.report_path = str(keep)  # type: ignore[attr-defined]
            raise
    return summarise(report)


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a report that goes in the stage manifest (no examples)."""
    keys = ("totals", "reasons", "invalid_fraction", "kinds", "unknown_roles", "lengths")
    summary = {k: report[k] for k in keys}
    summary["empty_files"] = report.get("empty_files", [])
    summary["files"] = [{k: f[k] for k in ("path", "split", "lines", "blank", "valid", "rejected")}
                        for f in report["files"]]
    summary["report"] = REPORT_FILE
    return summary
