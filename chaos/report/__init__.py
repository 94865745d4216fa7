"""The chaos run's report: summary table, JSON and a timeline picture.

Pure functions over the dicts that :class:`chaos.scenarios._runner.ScenarioResult`
produces (``as_dict()``), so the controller of an xdist run can build the report
from what workers sent, and unit tests need no server.
"""

from chaos.report.replay import replay_command
from chaos.report.table import format_progress, render_table
from chaos.report.timeline import render_timeline_svg

__all__ = ["format_progress", "render_table", "render_timeline_svg", "replay_command"]
