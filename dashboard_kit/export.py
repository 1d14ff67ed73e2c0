"""CSV of one card and a ZIP of many: the same columns and rows the page shows.

Each file starts with ``#`` lines saying what it is, whose data (the scope), the filters
applied and whether values are estimates; then one header row of descriptive labels (with
units), then the rows. Estimated values get two more columns: their 95% confidence interval.

>>> from edgemetrics.dashboard_kit.cards import CardData, Column
>>> data = CardData([Column("name", "Country", "text"), Column("share", "Share", "percent")],
...                 [{"name": "FR", "share": 0.25}])
>>> print(to_csv("Countries", data, scope="all creators", filters="period: last 7 days"))
# Countries
# scope: all creators
# filters: period: last 7 days
# values: exact
Country,Share (%)
FR,25.0
<BLANKLINE>
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable
from typing import Any

from edgemetrics.dashboard_kit.cards import CardData, Column

_UNITS = {"percent": "%", "duration": "seconds", "ms": "ms"}


def header(column: Column) -> str:
    unit = _UNITS.get(column.kind)
    if unit and f"({unit}" not in column.label and unit not in column.label.lower():
        return f"{column.label} ({unit})"
    return column.label


def cell(column: Column, row: dict[str, Any], value: Any) -> Any:
    if value is None:
        return ""
    kind = row.get("kind", column.kind) if column.key == "value" else column.kind
    if kind == "percent" and isinstance(value, int | float):
        return round(value * 100, 4)
    if isinstance(value, float) and value.is_integer() and kind in ("int", "money", "number"):
        return int(value) if kind == "int" else value
    if isinstance(value, float):
        return round(value, 6)
    return value


def to_csv(title: str, data: CardData, *, scope: str, filters: str) -> str:
    """The card as CSV text (see the module docstring for its shape)."""
    out = io.StringIO()
    out.write(f"# {title}\n# scope: {scope}\n# filters: {filters}\n")
    if data.estimated:
        out.write(
            f"# values: estimated from sampled data ({data.row_count} stored rows); "
            "95% confidence intervals in the _low/_high columns\n"
        )
    else:
        out.write("# values: exact\n")
    writer = csv.writer(out, lineterminator="\n")
    with_ci = [c for c in data.columns if any(r.get(f"{c.key}_ci") for r in data.rows)]
    names = [header(c) for c in data.columns]
    for c in with_ci:
        names += [f"{header(c)} 95% CI low", f"{header(c)} 95% CI high"]
    writer.writerow(names)
    for row in data.rows:
        values = [cell(c, row, row.get(c.key)) for c in data.columns]
        for c in with_ci:
            interval = row.get(f"{c.key}_ci") or [None, None]
            values += [cell(c, row, interval[0]), cell(c, row, interval[1])]
        writer.writerow(values)
    return out.getvalue()


def to_zip(files: Iterable[tuple[str, str]]) -> bytes:
    """A ZIP of ``(file name, text)`` pairs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files:
            archive.writestr(name, text)
    return buffer.getvalue()
