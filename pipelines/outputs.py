"""Helpers shared by asset wrappers: outputs carrying the content hash, Markdown tables."""

from __future__ import annotations

import dagster as dg
import polars as pl

from assets.bundle import Bundle


def bundle_output(bundle: Bundle, **metadata: object) -> dg.Output[Bundle]:
    """An Output whose Dagster data version is the bundle's content hash (as in DuckDB)."""
    return dg.Output(bundle, data_version=dg.DataVersion(bundle.content_hash()), metadata={
        "content_hash": bundle.content_hash(),
        **{name: frame.height for name, frame in ((f"rows_{k}", v) for k, v in bundle.frames.items())},
        **metadata,
    })


def markdown_rows(frame: pl.DataFrame, float_format: str = "{:.4f}") -> str:
    """A small frame as a GitHub Markdown table."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = [
        "| " + " | ".join(float_format.format(v) if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.iter_rows()
    ]
    return "\n".join([header, rule, *rows])


def markdown_table(frame: pl.DataFrame, float_format: str = "{:.4f}") -> dg.MetadataValue:
    """A small frame as a Markdown table for the Dagster UI."""
    return dg.MetadataValue.md(markdown_rows(frame, float_format))
