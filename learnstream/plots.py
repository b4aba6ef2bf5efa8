"""Query results drawn as time series (``learnstream query NAME --plot out.png``).

The first date-like column is the time axis. Text columns name the series (one line
per distinct combination, e.g. per practice mode); every numeric column is a measure,
and each measure gets its own panel so different units never share an axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any


class PlotError(ValueError):
    pass


def _as_time(value: Any) -> date | datetime | None:
    if isinstance(value, datetime | date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def series(
    columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[str, dict[str, dict[tuple[str, ...], list[tuple[Any, float]]]]]:
    """(time column, {measure: {series label: [(time, value)]}}) of a result."""
    if not rows:
        raise PlotError("the query returned no rows to plot")
    first = rows[0]
    time_index = next((i for i, v in enumerate(first) if _as_time(v) is not None), None)
    if time_index is None:
        raise PlotError("no date or time column to plot against")
    labels = [i for i, v in enumerate(first) if i != time_index and isinstance(v, str)]
    measures = [i for i, v in enumerate(first) if i != time_index and _is_number(v)]
    if not measures:
        raise PlotError("no numeric column to plot")
    out: dict[str, dict[tuple[str, ...], list[tuple[Any, float]]]] = {}
    for row in rows:
        moment = _as_time(row[time_index])
        label = tuple(str(row[i]) for i in labels)
        for i in measures:
            if row[i] is not None:
                out.setdefault(columns[i], {}).setdefault(label, []).append((moment, row[i]))
    for lines in out.values():
        for points in lines.values():
            points.sort(key=lambda p: p[0])
    return columns[time_index], out


def plot_time_series(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], path: str | Path, title: str = ""
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    time_column, measures = series(columns, rows)
    figure, axes = plt.subplots(
        len(measures), 1, figsize=(10, 3 * len(measures)), sharex=True, squeeze=False
    )
    for axis, (measure, lines) in zip(axes[:, 0], measures.items(), strict=True):
        for label, points in sorted(lines.items()):
            axis.plot(
                [p[0] for p in points], [p[1] for p in points], marker="o", label=" / ".join(label)
            )
        axis.set_ylabel(measure)
        if any(label for label in lines):
            axis.legend(fontsize="small", loc="best")
    axes[-1, 0].set_xlabel(time_column)
    if title:
        figure.suptitle(title)
    figure.autofmt_xdate()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
