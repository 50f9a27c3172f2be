"""The status report as one self-contained HTML file (no network): grid, failures, entries."""

from __future__ import annotations

import html
import json
from collections import defaultdict

from ..queue.status import STAGES, STATES, Board

COLOURS = {
    "done": "#2e7d32",
    "failed": "#c62828",
    "running": "#1565c0",
    "blocked": "#ef6c00",
    "pending": "#bdbdbd",
}
ERROR_COLOURS = {
    "TransientError": "#42a5f5",
    "ResourceError": "#ab47bc",
    "ValidationError": "#ef5350",
    "ConfigurationError": "#ffa726",
    "NonRetryableError": "#8d6e63",
    "RetryableError": "#78909c",
}
MAX_ENTRIES_SHOWN = 500  # rows of the open-entries table; the rest are counted
EVIDENCE_SHOWN = 240  # characters of an entry's evidence in the table

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212121; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.muted { color: #757575; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
.entries td { vertical-align: top; border-top: 1px solid #eee; }
.entries td.ev { max-width: 640px; font-family: monospace; font-size: 12px; text-align: left; }
code { font-size: 12px; background: #f5f5f5; padding: 1px 4px; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 4px;
  vertical-align: -1px; }
.panels { display: flex; flex-wrap: wrap; gap: 18px; }
.panel b { display: block; margin-bottom: 4px; }
#tip { position: fixed; pointer-events: none; background: #263238; color: #fff;
  padding: 4px 8px; border-radius: 3px; font-size: 12px; display: none; }
"""

# draws one grid per stage from the embedded data; hover names the session and its state
SCRIPT = """
const data = JSON.parse(document.getElementById('status-data').textContent);
const codes = {d: 'done', f: 'failed', r: 'running', b: 'blocked', p: 'pending'};
const n = data.sessions.length, cols = Math.max(1, Math.ceil(Math.sqrt(n * 1.5)));
const rows = Math.ceil(n / cols), size = Math.max(3, Math.min(22, Math.floor(640 / cols)));
const tip = document.getElementById('tip');
data.stages.forEach((stage, si) => {
  const canvas = document.getElementById('grid-' + stage);
  canvas.width = cols * size; canvas.height = rows * size;
  const ctx = canvas.getContext('2d');
  data.sessions.forEach((s, i) => {
    ctx.fillStyle = data.colours[codes[s[2][si]]];
    ctx.fillRect((i % cols) * size, Math.floor(i / cols) * size,
                 Math.max(1, size - 1), Math.max(1, size - 1));
  });
  canvas.addEventListener('mousemove', e => {
    const r = canvas.getBoundingClientRect();
    const i = Math.floor((e.clientY - r.top) / size) * cols + Math.floor((e.clientX - r.left) / size);
    if (i < 0 || i >= n) { tip.style.display = 'none'; return; }
    const s = data.sessions[i], state = codes[s[2][si]];
    const failure = data.failures[s[0] + '/' + s[1] + '/' + stage];
    tip.textContent = 'sub-' + s[0] + ' ses-' + s[1] + ' ' + stage + ': ' + state +
      (failure ? ' (#' + failure[0] + ' ' + failure[1] + ')' : '');
    tip.style.left = (e.clientX + 12) + 'px'; tip.style.top = (e.clientY + 12) + 'px';
    tip.style.display = 'block';
  });
  canvas.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
});
"""


def render_status_html(board: Board, command: str = "neuroflow-recover") -> str:
    """The whole report; `command` is how the user calls neuroflow-recover (retry lines)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>neuroflow status</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>neuroflow: where every session stands</h1>",
        f'<div class="muted">{_summary_line(board)}</div>',
        "<h2>Sessions per stage and state</h2>",
        _counts_table(board),
        "<h2>Every session (one square each, in sheet order)</h2>",
        _legend(COLOURS),
        _panels(),
        "<h2>Failures over time (dead-letter entries per day, by error class)</h2>",
        _failures_chart(board),
        f"<h2>Open dead-letter entries ({len(board.entries)})</h2>",
        _entries_table(board, command),
        '<div id="tip"></div>',
        f'<script type="application/json" id="status-data">{_embedded(board)}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary_line(board: Board) -> str:
    subjects = len({row.subject for row in board.sessions})
    return html.escape(
        f"{len(board.sessions)} sessions of {subjects} subjects, generated {board.generated_at}"
    )


def _counts_table(board: Board) -> str:
    counts = board.counts()
    head = "".join(
        f'<th><i style="color:{COLOURS[state]}">&#9632;</i> {state}</th>' for state in STATES
    )
    body = "".join(
        f'<tr><td class="l">{stage}</td>'
        + "".join(f'<td data-state="{state}">{counts[stage][state]}</td>' for state in STATES)
        + "</tr>"
        for stage in STAGES
    )
    return f'<table id="counts"><tr><th class="l">stage</th>{head}</tr>{body}</table>'


def _legend(colours: dict[str, str]) -> str:
    items = "".join(
        f'<span><i style="background:{colour}"></i>{html.escape(name)}</span>'
        for name, colour in colours.items()
    )
    return f'<div class="legend">{items}</div>'


def _panels() -> str:
    return (
        '<div class="panels">'
        + "".join(
            f'<div class="panel"><b>{stage}</b><canvas id="grid-{stage}"></canvas></div>'
            for stage in STAGES
        )
        + "</div>"
    )


def _embedded(board: Board) -> str:
    """The grid's data: a state letter per stage per session, failures by cell."""
    failures = {}
    sessions = []
    for row in board.sessions:
        sessions.append(
            [row.subject, row.session, "".join(row.stages[s].state[0] for s in STAGES)]
        )
        for stage, cell in row.stages.items():
            if cell.state == "failed":
                failures[f"{row.subject}/{row.session}/{stage}"] = [cell.entry_id, cell.error_type]
    data = {
        "generated_at": board.generated_at,
        "stages": list(STAGES),
        "colours": COLOURS,
        "counts": board.counts(),
        "sessions": sessions,
        "failures": failures,
    }
    # "</" would end the script element early
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def _failures_chart(board: Board, width: int = 300, height: int = 140) -> str:
    """Small multiples, one per pipeline: stacked bars per day by error class (inline SVG)."""
    if not board.failures_by_day:
        return '<div class="muted">no dead-letter entries yet</div>'
    days = sorted({day for day, _, _ in board.failures_by_day})
    per_pipeline: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for (day, pipeline, error), count in board.failures_by_day.items():
        per_pipeline[pipeline][day][error] = count
    peak = max(sum(by_error.values()) for p in per_pipeline.values() for by_error in p.values())
    charts = [
        _pipeline_chart(name, per_pipeline[name], days, peak, width, height)
        for name in sorted(per_pipeline)
    ]
    return _legend(ERROR_COLOURS) + '<div class="panels">' + "".join(charts) + "</div>"


def _pipeline_chart(name, by_day, days, peak, width, height) -> str:
    bar = min(24.0, max(1.0, (width - 40) / len(days)))
    scale = (height - 30) / peak
    bars = []
    for index, day in enumerate(days):
        y = height - 20
        for error, count in sorted(by_day.get(day, {}).items()):
            h = count * scale
            y -= h
            colour = ERROR_COLOURS.get(error, "#9e9e9e")
            bars.append(
                f'<rect x="{30 + index * bar:.1f}" y="{y:.1f}" width="{max(1.0, bar - 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{day} {html.escape(name)}: {count} '
                f"{html.escape(error)}</title></rect>"
            )
    axis = (
        f'<line x1="28" y1="{height - 20}" x2="{width}" y2="{height - 20}" stroke="#9e9e9e"/>'
        f'<text x="0" y="14" font-size="11">{peak}</text>'
        f'<text x="30" y="{height - 6}" font-size="11">{days[0]}</text>'
        f'<text x="{width}" y="{height - 6}" font-size="11" text-anchor="end">{days[-1]}</text>'
    )
    return (
        f'<div class="panel"><b>{html.escape(name)}</b>'
        f'<svg width="{width}" height="{height}" role="img">{axis}{"".join(bars)}</svg></div>'
    )


def _entries_table(board: Board, command: str) -> str:
    if not board.entries:
        return '<div class="muted">none: nothing waits for a fix</div>'
    shown = sorted(board.entries, key=lambda e: e.id)[:MAX_ENTRIES_SHOWN]
    rows = "".join(
        "<tr>"
        f"<td>{e.id}</td><td class=\"l\">{html.escape(e.pipeline)}</td>"
        f"<td class=\"l\">{html.escape(e.subject or '-')}</td>"
        f"<td class=\"l\">{html.escape(e.session or '-')}</td>"
        f"<td class=\"l\">{html.escape(e.error_type)}</td>"
        f"<td class=\"l\">{html.escape((e.failed_at or '-')[:16])}</td>"
        f'<td class="ev">{html.escape(_short(e.evidence))}</td>'
        f"<td class=\"l\"><code>{html.escape(command)} retry {e.id}</code></td>"
        "</tr>"
        for e in shown
    )
    more = len(board.entries) - len(shown)
    note = f'<div class="muted">and {more} more (neuroflow-recover list --all)</div>' if more else ""
    head = (
        '<tr><th>id</th><th class="l">pipeline</th><th class="l">subject</th>'
        '<th class="l">session</th><th class="l">class</th><th class="l">failed (UTC)</th>'
        '<th class="l">evidence</th><th class="l">to retry</th></tr>'
    )
    return f'<table class="entries">{head}{rows}</table>{note}'


def _short(text: str | None) -> str:
    text = " ".join((text or "-").split())
    return text if len(text) <= EVIDENCE_SHOWN else text[: EVIDENCE_SHOWN - 1] + "…"

