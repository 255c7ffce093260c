"""Helpers shared by asset wrappers: outputs carrying the content hash, tables and plots as metadata."""

from __future__ import annotations

import base64
import math
from typing import Sequence

import dagster as dg
import polars as pl

from assets.bundle import Bundle

# The Dagster UI renders Markdown metadata inline only below this length (else behind a click).
INLINE_MARKDOWN_LIMIT = 1000
SPARKLINE_POINTS = 24  # longer lines are thinned to this many points so the image stays inline


def bundle_output(bundle: Bundle, **metadata: object) -> dg.MaterializeResult:
    """The asset's result; its Dagster data version is the bundle's content hash (as in DuckDB)."""
    return dg.MaterializeResult(value=bundle, data_version=dg.DataVersion(bundle.content_hash()), metadata={
        "content_hash": bundle.content_hash(),
        **{f"rows_{k}": v.height for k, v in bundle.frames.items()},
        **{f"rows_{k}": v.height() for k, v in bundle.parts.items()},
        **metadata,
    })


def _column_type(dtype: pl.DataType) -> str:
    """A short type name for a TableColumn (Dagster shows it beside the column name)."""
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.String:
        return "string"
    return str(dtype).lower()


def column_schema(schema: pl.Schema) -> dg.TableSchema:
    """A frame's columns and types as a Dagster TableSchema (for `dagster/column_schema`)."""
    return dg.TableSchema(columns=[dg.TableColumn(name, _column_type(dtype)) for name, dtype in schema.items()])


def _cell(value: object) -> object:
    """A value a TableRecord accepts: str, int, float or bool (NaN and None as None; lists as text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def table(frame: pl.DataFrame, max_rows: int = 200) -> dg.MetadataValue:
    """A frame as a Dagster table with its schema: the UI sorts it by any column."""
    shown = frame.head(max_rows)
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in shown.iter_rows(named=True)]
    return dg.MetadataValue.table(records=records, schema=column_schema(frame.schema))


def frames_table(frames: dict[str, pl.DataFrame], parts: dict | None = None) -> dg.MetadataValue:
    """One row per frame of a bundle (parts: frames kept as files): its name, rows and columns."""
    parts = parts or {}
    rows = pl.DataFrame({"frame": [*frames, *parts],
                         "rows": [f.height for f in frames.values()] + [p.height() for p in parts.values()],
                         "columns": [", ".join(f.columns) for f in frames.values()] + [", ".join(p.schema().names()) for p in parts.values()]},
                        schema={"frame": pl.String, "rows": pl.Int64, "columns": pl.String})
    return table(rows)


def sparkline_svg(series: dict[str, Sequence[float]], width: int = 240, height: int = 80) -> str:
    """Lines as a tiny SVG (integer coordinates, one colour per line, min and max labelled).

    Small enough to embed in Markdown that the Dagster UI renders inline; NaN points are skipped.
    """
    colours = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    values = [v for line in series.values() for v in line if not math.isnan(v)]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    pad = 12
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' font-size='9'>"]
    for colour, (label, line) in zip(colours, series.items()):
        if len(line) > SPARKLINE_POINTS:  # evenly spaced points, the last one kept
            line = [line[round(i * (len(line) - 1) / (SPARKLINE_POINTS - 1))] for i in range(SPARKLINE_POINTS)]
        n = max(len(line) - 1, 1)
        points = " ".join(f"{round(pad + i * (width - 2 * pad) / n)},{round(height - pad - (v - lo) / span * (height - 2 * pad))}"
                          for i, v in enumerate(line) if not math.isnan(v))
        parts.append(f"<polyline fill='none' stroke='{colour}' points='{points}'/>")
    parts.append(f"<text x='0' y='9'>{hi:.4g}</text><text x='0' y='{height}'>{lo:.4g}</text></svg>")
    return "".join(parts)


def inline_plot(series: dict[str, Sequence[float]], title: str) -> dg.MetadataValue | None:
    """Lines as an image the UI shows inline: a legend and a base64 SVG under the inline limit.

    Returns None when there is nothing to draw or the image would not fit (too many points).
    """
    svg = sparkline_svg(series)
    if not svg:
        return None
    colours = ("blue", "orange", "green", "red", "purple", "brown")
    legend = ", ".join(f"{c}: {label}" for c, label in zip(colours, series))
    text = f"{title} ({legend})\n\n![{title}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
    return dg.MetadataValue.md(text) if len(text) < INLINE_MARKDOWN_LIMIT else None
