"""Ablation reports over finished t2ilab runs (``python -m t2ilab.report PATH...``).

* ``runs``  — find run dirs under the given paths and load each one's config, final metrics,
  metric history and sample grid (or say why it cannot be used);
* ``table`` — pick the grouping keys, aggregate seeds (mean ± std, n), render Markdown;
* ``html``  — matplotlib curves (mean ± std band over seeds) and sample grids in one offline page.
"""

from t2ilab.reporting.runs import LoadResult, Run, collect_runs
from t2ilab.reporting.table import Group, aggregate, differing_keys, group_runs, markdown_report

__all__ = ["Group", "LoadResult", "Run", "aggregate", "collect_runs", "differing_keys", "group_runs",
           "markdown_report"]
