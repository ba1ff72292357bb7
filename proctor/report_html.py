"""A report as a page a person reads: the recommendation first, then the evidence."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d2430;
padding:0 1rem}h1{font-size:1.5rem}table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid #dde2ea}
.verdict{display:inline-block;padding:.2rem .7rem;border-radius:1rem;font-weight:600}
.PASS{background:#d8f3df;color:#17602c}.REVIEW{background:#fff1c9;color:#7a5600}
.FAIL{background:#fbdada;color:#8c1d1d}.high{color:#8c1d1d;font-weight:600}
.moderate{color:#7a5600}.note{color:#5b6574;font-size:.9rem}
"""


def _seconds(value: Any) -> str:
    if value is None:
        return "open"
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)}:{seconds:04.1f}"


def _row(*cells: str, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _review_cell(flag: dict[str, Any]) -> str:
    review = flag.get("review")
    if not review:
        return "pending"
    note = f" · {escape(str(review['note']))}" if review.get("note") else ""
    return f"{escape(str(review['verdict']))} by {escape(str(review['by']))}{note}"


def _review_summary(report: dict[str, Any], review_url: str | None) -> str:
    """Before and after review, the person's decision, and the way to the review page."""
    ai = escape(str(report.get("ai_recommendation", report.get("recommendation", ""))))
    counts = report.get("reviewed") or {}
    decision = report.get("decision")
    decided = (f"decision <b>{escape(str(decision['decision']).upper())}</b> by "
               f"{escape(str(decision['by']))}" if decision else "no decision yet")
    link = (f' · <a href="{escape(review_url)}">review this session</a>'
            if review_url else "")
    return (f'<p class="note">before review <span class="verdict {ai}">{ai}</span> · '
            f'flags confirmed {counts.get("confirmed", 0)}, dismissed '
            f'{counts.get("dismissed", 0)}, pending {counts.get("pending", 0)} · '
            f"{decided}{link}</p>")


def render_report_html(report: dict[str, Any], clip_url: str | None = None,
                       review_url: str | None = None) -> str:
    """``clip_url`` is a format string with ``{clip_id}`` for links to evidence clips;
    ``review_url`` the session's review page."""
    verdict = escape(str(report.get("recommendation", "")))
    flags = report.get("flags", [])
    rows = [_row("Kind", "Severity", "From", "To", "Confidence", "Evidence", "Review",
                 header=True)]
    for flag in flags:
        clip_id = (flag.get("evidence") or {}).get("clip_id")
        link = (f'<a href="{escape(clip_url.format(clip_id=clip_id))}">clip</a>'
                if clip_url and clip_id else "")
        metrics = ", ".join(f"{escape(k)} {v}" for k, v in
                            ((flag.get("evidence") or {}).get("metrics") or {}).items())
        rows.append(_row(escape(flag["kind"]),
                         f'<span class="{escape(flag["severity"])}">'
                         f'{escape(flag["severity"])}</span>',
                         _seconds(flag["start"]), _seconds(flag["end"]),
                         f'{flag.get("confidence", 0):.2f}',
                         " ".join(filter(None, [metrics, link])), _review_cell(flag)))
    metric_rows = [_row(escape(name), "not measured" if value is None else f"{value:.2f}")
                   for name, value in (report.get("metrics") or {}).items()]
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Proctor report {escape(str(report.get("session_id", "")))}</title>
<style>{_STYLE}</style></head><body>
<h1>Integrity report</h1>
<p>Candidate <b>{escape(str(report.get("candidate_id", "")))}</b>
 · session {escape(str(report.get("session_id", "")))}</p>
<p><span class="verdict {verdict}">{verdict}</span>
 integrity score <b>{report.get("integrity_score", 0):.2f}</b>
 ({escape(str(report.get("integrity_band", "")))})</p>
{_review_summary(report, review_url)}
<p class="note">{escape(str(report.get("note", "")))}</p>
<h2>Flags ({len(flags)})</h2>
<table>{"".join(rows) if flags else "<tr><td>No flags.</td></tr>"}</table>
<h2>Behaviour</h2><table>{"".join(metric_rows)}</table>
</body></html>"""
