"""The text renderings of the commands' results (`list`, `show`, `stats`, `run`, `retry`,
`classify --explain`)."""

from __future__ import annotations

import io
import json
from datetime import datetime

from ..classify.classifier import Explanation
from ..queue.entries import entry_details, entry_summary
from ..queue.models import DeadLetterEntry
from ..queue.stats import STAT_GROUPS, stats_frame
from ..workflow.invocation import show_command

FORMATS = ("table", "csv", "json")


def render_stats(stats: dict, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(stats, indent=2, sort_keys=True)
    if fmt == "csv":
        buffer = io.StringIO()
        stats_frame(stats).to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    lines = [
        "Dead-letter queue",
        f"  total entries: {stats['total']}",
        f"  unresolved:    {stats['unresolved']}",
        f"  resolved:      {stats['resolved']}",
    ]
    titles = {"pipeline": "By pipeline", "error_type": "By error class", "subject": "By subject"}
    for name, _ in STAT_GROUPS:
        groups = stats[f"by_{name}"]
        if not groups:
            continue
        lines.append("")
        lines.append(f"{titles[name]} (unresolved / total):")
        width = max(len(str(key)) for key in groups)
        for key, counts in groups.items():
            lines.append(f"  {str(key):<{width}}  {counts['unresolved']} / {counts['total']}")
    return "\n".join(lines)


LIST_COLUMNS = (
    ("ID", "id"),
    ("PIPELINE", "pipeline"),
    ("SUBJECT", "subject"),
    ("SESSION", "session"),
    ("RULE", "rule"),
    ("ERROR CLASS", "error_type"),
    ("RESOURCE", "resource"),
    ("ATTEMPTS", "attempts"),
    ("FAILED AT (UTC)", "failed_at"),
)


def render_table(entries: list[DeadLetterEntry], *, show_resolved: bool = False) -> str:
    columns = list(LIST_COLUMNS)
    if any(entry.subject_id is None for entry in entries):  # another workflow's jobs
        columns.insert(columns.index(("RULE", "rule")) + 1, ("JOB", "job"))
    if show_resolved:
        columns.append(("RESOLVED", "resolved"))
    rows = []
    for entry in entries:
        data = entry_summary(entry)
        data["failed_at"] = _short_time(entry.failed_at)
        data["resolved"] = "yes" if entry.resolved else "no"
        data["job"] = entry.job_key.partition("/")[2]
        rows.append([_cell(data[key]) for _, key in columns])
    headers = [title for title, _ in columns]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def render_entry(entry: DeadLetterEntry) -> str:
    """Everything about one entry, for `show`."""
    data = entry_details(entry)
    status = (
        f"resolved by {data['resolved_by']} at {data['resolved_at']}"
        + (f" ({data['resolution_notes']})" if data["resolution_notes"] else "")
        if entry.resolved
        else "unresolved"
    )
    lines = [
        f"Dead-letter entry {entry.id}  [{status}]",
        f"  pipeline:     {data['pipeline']}",
        f"  rule:         {data['rule']}",
        f"  job:          {data['job_key']}",
        f"  subject:      {_cell(data['subject'])}",
        f"  session:      {_cell(data['session'])}",
        f"  wildcards:    {_wildcards(data['wildcards'])}",
        f"  error class:  {data['error_type']}"
        + (
            ""
            if data["retryable"]
            else "  (not retryable: `retry` needs a changed input or configuration, or --force)"
        ),
        f"  resource:     {_cell(data['resource'])}",
        f"  pattern:      {_cell(data['pattern_id'])}",
        f"  exit code:    {_cell(data['exit_code'])}",
        f"  SLURM state:  {_cell(data['slurm_state'])}",
        f"  SLURM jobs:   {', '.join(data['slurm_job_ids']) or '-'}",
        f"  attempts:     {data['attempts']}",
        f"  queued at:    {data['created_at']}",
        f"  last failed:  {data['failed_at']}  (run {_cell(data['run_id'])},"
        f" jobid {_cell(data['pipeline_run_id'])})",
        f"  evidence:     {_cell(data['evidence'])}",
        "  message:",
        *[f"    {line}" for line in (data["error_message"] or "-").splitlines()],
        "  targets:",
        *[f"    {target}" for target in data["targets"] or ["-"]],
        "  log files:",
        *[f"    {path}" for path in data["log_paths"] or ["-"]],
        f"  invocation:   {json.dumps(data['invocation'], sort_keys=True)}",
        "  attempt history:",
        *_history_lines(data["history"]),
    ]
    return "\n".join(lines)


def _history_lines(history: list[dict]) -> list[str]:
    if not history:
        return ["    -"]
    lines = []
    for item in history:
        resources = ", ".join(f"{k}={v}" for k, v in sorted(item["resources"].items()))
        lines.append(
            f"    #{item['attempt']}  {_cell(item['started_at'])}  run {_cell(item['run_id'])}"
            f"  exit {_cell(item['exit_code'])}  {_cell(item['error_type'])}"
            + (f" ({item['resource']})" if item["resource"] else "")
            + f"  [{item['source']}]"
        )
        lines.append(f"        evidence:  {_cell(item['evidence'])}")
        lines.append(f"        resources: {resources or '-'}")
        if item.get("peak_mem_mb") is not None or item.get("elapsed_s") is not None:
            lines.append(f"        used:      {_used(item)}")
        if item["slurm_job_id"] or item["slurm_state"]:
            lines.append(
                f"        SLURM:     job {_cell(item['slurm_job_id'])}"
                f" state {_cell(item['slurm_state'])}"
            )
        if item["host"]:
            lines.append(f"        host:      {item['host']}")
    return lines


def _used(item: dict) -> str:
    """``peak 812 MB, 63.2 s, CPU 41.0 s (process-tree)`` of a history row or record."""
    parts = []
    if item.get("peak_mem_mb") is not None:
        parts.append(f"peak {item['peak_mem_mb']} MB")
    if item.get("elapsed_s") is not None:
        parts.append(f"{item['elapsed_s']:.1f} s")
    if item.get("cpu_s") is not None:
        parts.append(f"CPU {item['cpu_s']:.1f} s")
    return ", ".join(parts) + (f" ({item['usage_source']})" if item.get("usage_source") else "")


def _cell(value) -> str:
    if value is None or value == "":
        return "-"
    return str(value)


def _wildcards(wildcards: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((wildcards or {}).items())) or "-"


def _short_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M")


def render_run_summary(summary) -> str:
    """`run`'s summary (a run.RunSummary)."""
    lines = []
    if summary.plan is not None:
        kind = "full" if summary.plan.full else "pending only"
        lines.append(f"plan: {kind} ({summary.plan.reason})")
    for item in summary.rounds:
        lines.append(
            f"round {item.number}: snakemake exit code {item.returncode}, "
            f"log {item.log_path or '-'}"
        )
        if item.failed:
            lines.append(f"  failed jobs: {', '.join(item.failed)}")
        if item.retried:
            lines.append(f"  retried after backoff (transient): {', '.join(item.retried)}")
        if item.entry_ids:
            lines.append(f"  dead-lettered: {', '.join(map(str, item.entry_ids))}")
        if getattr(item, "resolved", None):
            lines.append(f"  resolved (the job succeeded): {', '.join(map(str, item.resolved))}")
        for error in getattr(item, "errors", [])[:5]:
            first = (error.strip().splitlines() or [""])[0]
            lines.append(f"  snakemake error: {first[:200]}")
    ids = summary.entry_ids
    if summary.returncode != 0 and not ids:
        lines.append("Snakemake failed outside any job it reported (see its output above)")
    lines.append(f"snakemake exit code: {summary.returncode}")
    lines.append(
        f"dead-lettered entries: {', '.join(map(str, ids))} "
        "(see `neuroflow-recover list` / `show ID`)"
        if ids
        else "dead-lettered entries: none"
    )
    return "\n".join(lines)


def render_ingest_report(report) -> str:
    """`ingest`'s report (an ingest.IngestReport)."""
    if not report.logs:
        return "no new Snakemake logs to ingest"
    lines = []
    for item in report.logs:
        text = f"{item.path}: {item.status}"
        if item.status in ("ingested", "ingested-live"):
            text += f", {len(item.failures)} failed job(s)"
            if item.entry_ids:
                text += f" -> entries {', '.join(map(str, item.entry_ids))}"
            if getattr(item, "resolved_ids", None):
                resolved = ", ".join(map(str, item.resolved_ids))
                text += f"; resolved (the job succeeded): {resolved}"
        elif item.message:
            text += f" ({item.message})"
        lines.append(text)
        lines += [f"  recovered in the same run: {job}" for job in item.recovered]
        lines += [
            f"  not understood: line {n.line}: {n.text} ({n.why})" for n in item.not_understood
        ]
    ids = report.entry_ids
    lines.append(f"dead-lettered entries: {', '.join(map(str, ids)) if ids else 'none'}")
    return "\n".join(lines)


def render_retry(outcomes) -> str:
    """`retry` / `retry-all` outcomes (retry.RetryOutcome)."""
    lines = []
    for outcome in outcomes:
        if outcome.command:
            label = "would run" if outcome.dry_run else "ran"
            ids = ", ".join(map(str, outcome.entry_ids))
            noun = "entry" if len(outcome.entry_ids) == 1 else "entries"
            lines.append(f"{noun} {ids}: {label}: {show_command(outcome.command)}")
            targets = list(getattr(outcome, "targets", None) or [])
            if targets:
                lines.append("  targets:")
                lines += [f"    {target}" for target in targets]
        for entry_id, why in outcome.skipped.items():
            lines.append(f"  entry {entry_id}: skipped, {why}")
        if outcome.dry_run:
            continue
        if outcome.returncode is not None:
            lines.append(
                f"  snakemake exit code {outcome.returncode}, log {outcome.log_path or '-'}"
            )
        for entry_id in outcome.resolved:
            lines.append(f"  entry {entry_id}: resolved (the job succeeded)")
        for entry_id in outcome.still_open:
            lines.append(f"  entry {entry_id}: still open (the job failed again or did not run)")
        if outcome.new_entries:
            lines.append(
                f"  new entries for other jobs: {', '.join(map(str, outcome.new_entries))}"
            )
    return "\n".join(lines)


# --- status ---------------------------------------------------------------------------

STATUS_CSV_COLUMNS = (
    "subject", "session", "stage", "state", "since", "entry_id", "error_type", "slurm_job_id",
    "evidence",
)  # fmt: skip


def status_rows(board, stages=None, states=None) -> list[dict]:
    """One record per (session, stage), filtered by stage and state (None: all)."""
    rows = []
    for row in board.sessions:
        for stage, cell in row.stages.items():
            if (stages and stage not in stages) or (states and cell.state not in states):
                continue
            rows.append(
                {
                    "subject": row.subject,
                    "session": row.session,
                    "stage": stage,
                    "state": cell.state,
                    "since": cell.since,
                    "entry_id": cell.entry_id,
                    "error_type": cell.error_type,
                    "slurm_job_id": cell.slurm_job_id,
                    "evidence": cell.evidence,
                }
            )
    return rows


def render_status_csv(board, stages=None, states=None) -> str:
    """Header row, one record per (session, stage), ISO times in UTC."""
    import pandas as pd

    frame = pd.DataFrame(status_rows(board, stages, states), columns=list(STATUS_CSV_COLUMNS))
    frame["entry_id"] = frame["entry_id"].astype("Int64")
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().rstrip("\n")


def render_status_table(board, stages=None, states=None) -> str:
    """The counts per stage and state, then one row per session (filtered)."""
    from ..queue.status import STAGES, STATES

    counts = board.counts()
    shown_stages = [s for s in STAGES if not stages or s in stages]
    subjects = len({row.subject for row in board.sessions})
    lines = [f"{len(board.sessions)} session(s) of {subjects} subject(s), {board.generated_at}"]
    header = ["STAGE", *(state.upper() for state in STATES)]
    table = [[stage, *(str(counts[stage][state]) for state in STATES)] for stage in STAGES]
    lines += _aligned([header, *table])
    rows = [
        [row.subject, row.session, *(_status_cell(row.stages[s]) for s in shown_stages)]
        for row in board.sessions
        if not states or any(row.stages[s].state in states for s in shown_stages)
    ]
    if rows:
        lines.append("")
        lines += _aligned([["SUBJECT", "SESSION", *(s.upper() for s in shown_stages)], *rows])
    return "\n".join(lines)


def _status_cell(cell) -> str:
    if cell.state == "failed":
        return f"failed #{cell.entry_id} {cell.error_type}"
    if cell.state == "running" and cell.slurm_job_id:
        return f"running (SLURM {cell.slurm_job_id})"
    return cell.state


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def render_sent(sent, test: bool) -> str:
    """`notify`: each channel's verdict."""
    if not sent:
        return "nothing to deliver"
    lines = []
    for item in sent:
        if test:
            verdict = "accepted" if item.status == "delivered" else f"FAILED: {item.error}"
            lines.append(f"{item.channel}: test message {verdict}")
        elif item.status == "nothing":
            lines.append(f"{item.channel}: nothing pending")
        elif item.status == "failed":
            lines.append(f"{item.channel}: {item.notifications} pending, FAILED: {item.error}")
        else:
            lines.append(f"{item.channel}: {item.notifications} notification(s) {item.status}")
    return "\n".join(lines)


def render_purge(report) -> str:
    """`purge`: what was (or, dry, would be) removed."""
    verb = "would remove" if report.dry_run else "removed"
    ids = ", ".join(map(str, report.entry_ids)) or "none"
    return (
        f"{verb}: {len(report.entry_ids)} resolved entr(y/ies) older than "
        f"{report.older_than_days} days ({ids}); {report.notifications} delivered "
        f"notification(s); attempt records of {report.attempt_jobs} finished job(s); "
        f"{len(report.work_dirs)} work director(y/ies) of old dead letters"
    )


def render_explanation(explanation: Explanation) -> str:
    """`classify --explain`: the verdict, why, then every matching pattern (winner first)."""
    result = explanation.classification
    what = result.error_class + (f" ({result.resource})" if result.resource else "")
    lines = [
        f"class:       {what}, {'retryable' if result.retryable else 'not retryable'}",
        f"decided by:  {explanation.decided_by} ({_cell(result.pattern_id)})",
        f"evidence:    {_cell(result.evidence)}",
        f"why:         {explanation.reason}",
        f"matching patterns ({len(explanation.matches)}, highest priority first):",
    ]
    for m in explanation.matches:
        cls = m.error_class + (f"/{m.resource}" if m.resource else "")
        lines.append(f"  {m.priority:>4}  {m.pattern_id}  {cls}  line {m.line_number}"
                     + ("  (user pattern)" if m.user else ""))
        lines.append(f"        line:   {m.line}")
        lines.append(f"        source: {_cell(m.source)}")
    return "\n".join(lines)


def usage_row(row) -> dict:
    """One rule of `resources` as a flat row (CSV)."""
    flat = {
        "rule": row.rule, "stage": row.stage, "jobs": row.jobs, "attempts": row.attempts,
        "succeeded": row.succeeded,
    }  # fmt: skip
    for name in ("requested_mem_mb", "used_mem_mb", "requested_runtime_min", "used_runtime_min",
                 "cpu_efficiency"):  # fmt: skip
        spread = getattr(row, name)
        for stat in ("p50", "p95", "max"):
            value = getattr(spread, stat)
            flat[f"{name}_{stat}"] = None if value is None else round(value, 3)
    for cause in ("memory", "runtime", "disk", "transient", "unknown", "final"):
        flat[f"failed_{cause}"] = row.failures.get(cause, 0)
    suggested = row.suggested or {}
    flat.update(
        suggested_mem_mb=suggested.get("mem_mb"), suggested_runtime_min=suggested.get("runtime"),
        history=row.history, min_history=row.min_history, learned=row.learned,
    )  # fmt: skip
    return flat


def render_usage(rows, fmt: str = "table") -> str:
    """`neuroflow-recover resources`: per rule, requested vs used."""
    if fmt == "json":
        return json.dumps([row.to_dict() for row in rows], indent=2, sort_keys=True)
    if fmt == "csv":
        import pandas as pd

        buffer = io.StringIO()
        pd.DataFrame([usage_row(row) for row in rows]).to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue().rstrip("\n")
    if not rows:
        return "no attempt records yet (.neuroflow/attempts)"
    return "\n\n".join(_usage_block(row) for row in rows)


def _num(value, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _usage_block(row) -> str:
    failures = ", ".join(f"{cause} {n}" for cause, n in row.failures.items()) or "none"
    req_mem, used_mem = row.requested_mem_mb, row.used_mem_mb
    req_time, used_time = row.requested_runtime_min, row.used_runtime_min
    lines = [
        f"{row.rule} ({row.stage}): {row.jobs} jobs, {row.attempts} attempts, "
        f"{row.succeeded} jobs succeeded; failed attempts: {failures}",
        f"  memory MB     requested p50 {_num(req_mem.p50)}  max {_num(req_mem.max)}"
        f"   used p50 {_num(used_mem.p50)}  p95 {_num(used_mem.p95)}  max {_num(used_mem.max)}",
        f"  runtime min   requested p50 {_num(req_time.p50)}  max {_num(req_time.max)}"
        f"   used p50 {_num(used_time.p50, 1)}  p95 {_num(used_time.p95, 1)}"
        f"  max {_num(used_time.max, 1)}",
        f"  CPU efficiency p50 {_num(row.cpu_efficiency.p50, 2)}"
        f"  (CPU time / (elapsed x threads) of successful attempts)",
    ]
    if row.suggested is not None:
        state = (
            "used for first attempts" if row.learned
            else f"not used yet: {row.history} of {row.min_history} jobs"
        )  # fmt: skip
        lines.append(
            f"  suggested     mem_mb {row.suggested['mem_mb']}  runtime {row.suggested['runtime']}"
            f"  (from {row.history} successful jobs; {state})"
        )
    return "\n".join(lines)
