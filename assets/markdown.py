"""The one Markdown table renderer (polars' own Markdown formatting), for the report and `stats`."""

from __future__ import annotations

from typing import Any

import polars as pl


def cell_text(value: Any, decimals: int = 3) -> str:
    """One cell: floats to `decimals` places, lists joined by commas, None empty, `|` and newlines escaped."""
    if value is None:
        text = ""
    elif isinstance(value, float):
        text = f"{value:.{decimals}f}"
    elif isinstance(value, list):
        text = ", ".join(cell_text(v, decimals) for v in value)
    else:
        text = str(value)
    return text.replace("|", r"\|").replace("\n", " ")


def markdown_table(frame: pl.DataFrame, decimals: int = 3) -> str:
    """`frame` as a GitHub Markdown table with every row and column."""
    cells = pl.DataFrame({name: pl.Series(name, [cell_text(v, decimals) for v in frame[name].to_list()], dtype=pl.String)
                          for name in frame.columns})
    with pl.Config(tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
                   tbl_rows=-1, tbl_cols=-1, tbl_width_chars=-1, fmt_str_lengths=10_000):
        return str(cells)
