"""A timeline picture of one scenario: faults, caller errors and latency over time.

Plain SVG written by hand (no plotting dependency): fault intervals are
shaded, one-shot events (restart, crash, "accepting again") are vertical
lines, every successful operation is a dot at its end time and latency, and
every error is a red cross in the band at the top.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

WIDTH, HEIGHT = 960, 380
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 56, 44
ERROR_BAND = 18


def _nice_max(value: float) -> float:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000):
        if value <= step:
            return float(step)
    return float(value)


def render_timeline_svg(result: Mapping[str, Any]) -> str:
    """The SVG text for a result dict (``ScenarioResult.as_dict()``) that has a timeline."""
    timeline = result.get("timeline") or {}
    ops = timeline.get("ops", [])  # [start_s, end_s, ok, worker]
    events = timeline.get("events", [])  # {"t", "kind", "label", "end"?}
    span = max(
        [1.0]
        + [o[1] for o in ops]
        + [e.get("end") or e["t"] for e in events]
        + [result.get("duration_s") or 0]
    )
    latencies = sorted((o[1] - o[0]) * 1000 for o in ops if o[2])
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 1.0
    y_max = _nice_max(max(p99 * 1.5, 1.0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_top = TOP + ERROR_BAND + 6
    plot_h = HEIGHT - plot_top - BOTTOM

    def x(t: float) -> float:
        return LEFT + plot_w * max(0.0, min(t, span)) / span

    def y(ms: float) -> float:
        return plot_top + plot_h * (1 - min(ms, y_max) / y_max)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT}" y="18" font-size="14" font-weight="bold">'
        f"{escape(str(result.get('name', 'scenario')))}: "
        f"{escape(str(result.get('verdict', '?')).upper())}</text>",
        f'<text x="{LEFT}" y="34" fill="#444">faults: {escape(str(result.get("faults", "-")))}'
        f" | caller errors: {result.get('errors_seen', 0)}"
        f" | recovery: {_fmt(result.get('recovery_s'))}</text>",
    ]
    # fault intervals and events
    for event in events:
        if event.get("end") is not None:
            x0, x1 = x(event["t"]), x(event["end"])
            out.append(
                f'<rect x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1):.1f}" '
                f'height="{HEIGHT - TOP - BOTTOM}" fill="#f4c542" fill-opacity="0.25"/>'
            )
    for n, event in enumerate(events):
        color = {"fault": "#d9480f", "heal": "#2b8a3e", "accepting": "#1864ab"}.get(
            event.get("kind"), "#555"
        )
        xe = x(event["t"])
        out.append(
            f'<line x1="{xe:.1f}" y1="{TOP}" x2="{xe:.1f}" y2="{HEIGHT - BOTTOM}" '
            f'stroke="{color}" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{xe + 3:.1f}" y="{TOP + 10 + 12 * (n % 3)}" fill="{color}">'
            f"{escape(str(event.get('label', event.get('kind'))))}</text>"
        )
    # axes
    out.append(
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="black"/>'
    )
    out.append(
        f'<line x1="{LEFT}" y1="{plot_top}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>'
    )
    for i in range(6):
        t = span * i / 5
        out.append(
            f'<text x="{x(t):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{t:.1f}s</text>'
        )
        ms = y_max * i / 5
        out.append(
            f'<text x="{LEFT - 4}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:g}</text>'
            f'<line x1="{LEFT}" y1="{y(ms):.1f}" x2="{WIDTH - RIGHT}" y2="{y(ms):.1f}" '
            f'stroke="#eee"/>'
        )
    out.append(
        f'<text x="14" y="{plot_top + plot_h / 2:.0f}" transform="rotate(-90 14 '
        f'{plot_top + plot_h / 2:.0f})" text-anchor="middle">latency (ms)</text>'
    )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 8}" text-anchor="middle">'
        "time since workload start</text>"
    )
    out.append(
        f'<text x="{LEFT - 4}" y="{TOP + ERROR_BAND - 4}" text-anchor="end" fill="#c92a2a">'
        "errors</text>"
    )
    # operations
    for start, end, ok, *_ in ops:
        if ok:
            out.append(
                f'<circle cx="{x(end):.1f}" cy="{y((end - start) * 1000):.1f}" r="1.6" '
                f'fill="#1c7ed6" fill-opacity="0.6"/>'
            )
        else:
            cx, cy = x(end), TOP + ERROR_BAND / 2
            out.append(
                f'<path d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}'
                f'M{cx - 4:.1f},{cy + 4:.1f}L{cx + 4:.1f},{cy - 4:.1f}" stroke="#c92a2a" '
                'stroke-width="1.5"/>'
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
