"""Helpers shared by asset wrappers: outputs carrying the content hash, Markdown tables."""

from __future__ import annotations

import dagster as dg
import polars as pl

import assets.markdown
from assets.bundle import Bundle


def bundle_output(bundle: Bundle, **metadata: object) -> dg.Output[Bundle]:
    """An Output whose Dagster data version is the bundle's content hash (as in DuckDB)."""
    return dg.Output(bundle, data_version=dg.DataVersion(bundle.content_hash()), metadata={
        "content_hash": bundle.content_hash(),
        **{name: frame.height for name, frame in ((f"rows_{k}", v) for k, v in bundle.frames.items())},
        **metadata,
    })


def markdown_table(frame: pl.DataFrame, decimals: int = 4) -> dg.MetadataValue:
    """A small frame as a Markdown table for the Dagster UI."""
    return dg.MetadataValue.md(assets.markdown.markdown_table(frame, decimals))
