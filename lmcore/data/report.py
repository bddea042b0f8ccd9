"""The validation report: counting verdicts, the invalid-fraction check, and two renderings.

Why here and not in validate.py: the shard stage counts the same verdicts and
applies the same ``data.max_invalid_fraction`` check, and the CLI and the
Prefect artifact render the same dict. The report is plain JSON (``report.json``):

``totals`` {lines, blank, valid, rejected, invalid, filtered}; ``reasons``
{reason: count} for every reason (zeros included); ``invalid_fraction`` =
invalid / non-blank lines (``duplicate``, ``empty`` and ``too_short`` are
*filtered*, not invalid: they do not count toward the limit); ``files`` one
entry per input with its own counts; ``kinds`` {text, chat}; ``lengths``
characters of kept records {count, min, mean, p50, p95, max} (exact,
nearest-rank percentiles from a length histogram, so memory does not grow
with the record count); ``examples`` up to :data:`EXAMPLES_PER_REASON` per
reason with ``where`` = ``file:line``, detail and the start of the raw line.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from lmcore.data.formats import InputFile
from lmcore.data.records import BLANK, FILTERED_REASONS, INVALID_REASONS, REASONS, escape_raw
from lmcore.data.verdicts import LineVerdict
from lmcore.errors import DataFormatError

EXAMPLES_PER_REASON = 5
EXAMPLE_CHARS = 200


class LengthStats:
    """Exact min/mean/percentiles of integer lengths, in memory proportional to distinct lengths."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0

    def add(self, length: int) -> None:
        self.counts[length] = self.counts.get(length, 0) + 1
        self.n += 1
        self.total += length

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile: the smallest length with at least ``q``% of values at or below it."""
        rank = max(1, math.ceil(q / 100 * self.n))
        seen = 0
        for length in sorted(self.counts):
            seen += self.counts[length]
            if seen >= rank:
                return length
        raise ValueError("no lengths")

    def to_dict(self) -> dict[str, Any]:
        if not self.n:
            return {"count": 0, "min": None, "mean": None, "p50": None, "p95": None, "max": None}
        return {"count": self.n, "min": min(self.counts), "mean": round(self.total / self.n, 2),
                "p50": self.percentile(50), "p95": self.percentile(95), "max": max(self.counts)}


def _empty_counts() -> dict[str, Any]:
    return {"lines": 0, "blank": 0, "valid": 0, "reasons": {r: 0 for r in REASONS}}


class ReportBuilder:
    """Feed it every :class:`LineVerdict` (``add``); ``to_dict()`` gives the report."""

    def __init__(self, settings: dict[str, Any], files: Sequence[InputFile] = ()):
        self.settings = settings
        self.files: dict[str, dict[str, Any]] = {}
        for f in files:  # listed up front so an empty file still shows, with zero lines
            self.files[f.path] = {"path": f.path, "split": f.forced_split, **_empty_counts()}
        self.kinds = {"text": 0, "chat": 0}
        self.lengths = LengthStats()
        self.examples: dict[str, list[dict[str, Any]]] = {r: [] for r in REASONS}
        self.unknown_roles: dict[str, int] = {}  # speaker name -> turns, for names the role table lacks

    def add(self, v: LineVerdict) -> None:
        counts = self.files.get(v.file.path)
        if counts is None:
            counts = self.files[v.file.path] = {"path": v.file.path, "split": v.file.forced_split, **_empty_counts()}
        counts["lines"] += 1
        if v.reason is None:
            counts["valid"] += 1
            self.kinds[v.record.kind] += 1
            self.lengths.add(v.record.chars)
            for name in v.record.unknown_roles:
                self.unknown_roles[name] = self.unknown_roles.get(name, 0) + 1
        elif v.reason == BLANK:
            counts["blank"] += 1
        else:
            counts["reasons"][v.reason] += 1
            examples = self.examples[v.reason]
            if len(examples) < EXAMPLES_PER_REASON:
                examples.append({"where": v.where, "detail": v.detail, "raw": escape_raw(v.raw, EXAMPLE_CHARS)})

    def to_dict(self) -> dict[str, Any]:
        files = []
        for f in self.files.values():
            f = dict(f, reasons=dict(f["reasons"]))
            f["rejected"] = sum(f["reasons"].values())
            files.append(f)
        reasons = {r: sum(f["reasons"][r] for f in files) for r in REASONS}
        lines = sum(f["lines"] for f in files)
        blank = sum(f["blank"] for f in files)
        invalid = sum(reasons[r] for r in INVALID_REASONS)
        filtered = sum(reasons[r] for r in FILTERED_REASONS)
        return {
            "totals": {"lines": lines, "blank": blank, "valid": sum(f["valid"] for f in files),
                       "rejected": invalid + filtered, "invalid": invalid, "filtered": filtered},
            "reasons": reasons,
            "invalid_fraction": round(invalid / (lines - blank), 6) if lines > blank else 0.0,
            "max_invalid_fraction": self.settings.get("max_invalid_fraction"),
            "kinds": dict(self.kinds),
            "unknown_roles": dict(sorted(self.unknown_roles.items(), key=lambda kv: (-kv[1], kv[0]))),
            "lengths": self.lengths.to_dict(),
            "files": files,
            "empty_files": [f["path"] for f in files if f["lines"] == f["blank"]],  # nothing to train on
            "examples": {r: e for r, e in self.examples.items() if e},
            "settings": self.settings,
        }


def worst_reasons(report: dict[str, Any], n: int = 3, only_invalid: bool = True) -> list[tuple[str, int]]:
    """The ``n`` most frequent rejection reasons with their counts, most frequent first."""
    names = INVALID_REASONS if only_invalid else REASONS
    ranked = sorted(((r, report["reasons"][r]) for r in names if report["reasons"][r]), key=lambda rc: (-rc[1], rc[0]))
    return ranked[:n]


def check_invalid_fraction(report: dict[str, Any], max_fraction: float, report_path: Optional[str]) -> None:
    """Raise :class:`DataFormatError` when too many lines are invalid, naming the worst reasons.

    The error carries ``.report`` (the dict) and ``.report_path`` so a caller
    can keep or print the report after the failure.
    """
    fraction = report["invalid_fraction"]
    if fraction <= max_fraction:
        return
    totals = report["totals"]
    parts = []
    for reason, count in worst_reasons(report):
        example = report["examples"].get(reason, [{}])[0].get("where", "")
        parts.append(f"{reason}: {count}" + (f" (e.g. {example})" if example else ""))
    where = f"; full report: {report_path}" if report_path else ""
    err = DataFormatError(
        f"{totals['invalid']} of {totals['lines'] - totals['blank']} non-blank lines are invalid "
        f"({fraction:.1%} > data.max_invalid_fraction {max_fraction:.1%}); worst: {', '.join(parts)}{where}. "
        + (hint_for(report) or "Fix the inputs, point data.text_fields at the right field, "
                                "or raise data.max_invalid_fraction."))
    err.report = report  # type: ignore[attr-defined]
    err.report_path = report_path  # type: ignore[attr-defined]
    raise err


def hint_for(report: dict[str, Any]) -> Optional[str]:
    """What to do about the most frequent invalid reason, when a common cause is recognisable."""
    worst = worst_reasons(report, n=1)
    if not worst:
        return None
    reason = worst[0][0]
    raws = [e["raw"].strip() for e in report["examples"].get(reason, [])]
    if reason == "malformed_json" and any(r in ("[", "]", "[{", "},", "{") or r.startswith("[{") for r in raws):
        return ("The input looks like one JSON array (or pretty-printed JSON), not JSON Lines: write one object "
                "per line, e.g. `jq -c '.[]' data.json > data.jsonl`.")
    if reason == "invalid_utf8":
        return "The input is not UTF-8 (UTF-16 or Latin-1?): re-encode it, e.g. `iconv -f latin1 -t utf-8`."
    if reason == "no_text_field":
        return ("No line has one of data.text_fields (or messages/conversations); set data.text_fields to the "
                "field that holds the text (the examples list the keys seen).")
    if reason == "wrong_type":
        return "The text field holds non-strings; point data.text_fields at a string field."
    return None


# --------------------------------------------------------------------------- rendering


def render_report(report: dict[str, Any]):
    """A rich renderable (tables) of the report, for the terminal."""
    from rich.console import Group
    from rich.table import Table

    totals = report["totals"]
    summary = Table(title="Validation summary", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("", justify="right")
    for key in ("lines", "blank", "valid", "rejected", "invalid", "filtered"):
        summary.add_row(key, f"{totals[key]:,}")
    limit = report.get("max_invalid_fraction")
    bad = limit is not None and report["invalid_fraction"] > limit
    summary.add_row("invalid fraction", f"[{'red' if bad else 'green'}]{report['invalid_fraction']:.2%}[/]"
                    + (f" (max {limit:.0%})" if limit is not None else ""))
    kinds = report.get("kinds", {})
    summary.add_row("kinds", ", ".join(f"{k} {v:,}" for k, v in kinds.items()))
    unknown = report.get("unknown_roles") or {}
    if unknown:
        summary.add_row("unknown speakers (kept)", ", ".join(f"{k} {v:,}" for k, v in list(unknown.items())[:8]))
    empty = report.get("empty_files") or []
    if empty:
        summary.add_row("[red]empty files[/]", f"[red]{len(empty):,}[/] (no records: {', '.join(empty[:3])}"
                        f"{' ...' if len(empty) > 3 else ''})")
    lengths = report["lengths"]
    if lengths["count"]:
        summary.add_row("length (chars)", f"min {lengths['min']:,} · mean {lengths['mean']:,.0f} · p50 "
                        f"{lengths['p50']:,} · p95 {lengths['p95']:,} · max {lengths['max']:,}")

    reasons = Table(title="Rejected lines by reason")
    for col in ("reason", "kind", "count", "example"):
        reasons.add_column(col, justify="right" if col == "count" else "left")
    for reason, count in worst_reasons(report, n=len(REASONS), only_invalid=False):
        ex = report["examples"].get(reason, [{}])[0]
        kind = "invalid" if reason in INVALID_REASONS else "filtered"
        reasons.add_row(reason, kind, f"{count:,}", f"{ex.get('where', '')} {ex.get('detail', '')}".strip())

    files = Table(title="Per file")
    files.add_column("file", overflow="fold")
    for col in ("split", "lines", "blank", "valid", "rejected"):
        files.add_column(col, justify="left" if col == "split" else "right")
    for f in report["files"]:
        files.add_row(f["path"], f["split"] or "hash", f"{f['lines']:,}", f"{f['blank']:,}", f"{f['valid']:,}",
                      f"{f['rejected']:,}")
    parts = [summary, files] + ([reasons] if totals["rejected"] else [])
    return Group(*parts)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (for a Prefect artifact or an MLflow text artifact)."""
    t = report["totals"]
    lines = ["# Data validation report", "",
             f"**{t['valid']:,}** records kept of {t['lines']:,} lines ({t['blank']:,} blank, "
             f"{t['invalid']:,} invalid, {t['filtered']:,} filtered). "
             f"Invalid fraction **{report['invalid_fraction']:.2%}**"
             + (f" (max {report['max_invalid_fraction']:.0%})." if report.get("max_invalid_fraction") is not None
                else "."), ""]
    empty = report.get("empty_files") or []
    if empty:
        lines += [f"**{len(empty)} file(s) hold no records:** " + ", ".join(f"`{p}`" for p in empty), ""]
    lengths = report["lengths"]
    if lengths["count"]:
        lines += [f"Length in characters: min {lengths['min']}, mean {lengths['mean']}, p50 {lengths['p50']}, "
                  f"p95 {lengths['p95']}, max {lengths['max']}.", ""]
    ranked = worst_reasons(report, n=len(REASONS), only_invalid=False)
    if ranked:
        lines += ["| reason | kind | count | example |", "|---|---|---:|---|"]
        for reason, count in ranked:
            ex = report["examples"].get(reason, [{}])[0]
            kind = "invalid" if reason in INVALID_REASONS else "filtered"
            detail = f"`{ex.get('where', '')}` {ex.get('detail', '')}".replace("|", "\\|")
            lines.append(f"| {reason} | {kind} | {count:,} | {detail} |")
        lines.append("")
    lines += ["| file | split | lines | blank | valid | rejected |", "|---|---|---:|---:|---:|---:|"]
    for f in report["files"]:
        lines.append(f"| `{f['path']}` | {f['split'] or 'hash'} | {f['lines']:,} | {f['blank']:,} | "
                     f"{f['valid']:,} | {f['rejected']:,} |")
    return "\n".join(lines) + "\n"
