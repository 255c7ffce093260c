"""Metadata the Dagster UI can use: sortable tables with schemas, row counts, inline plots."""

import math

import dagster as dg
import polars as pl

from assets.bundle import Bundle
from pipelines.io_manager import canonical_metadata
from pipelines.outputs import INLINE_MARKDOWN_LIMIT, column_schema, inline_plot, table


def test_a_frame_becomes_a_sortable_table_with_its_schema():
    frame = pl.DataFrame({"method": ["melu", "paml"], "mean": [0.5, float("nan")], "n": [3, None],
                          "days": [["2026-01-01"], []]})
    value = table(frame)
    assert isinstance(value, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in value.schema.columns] == [
        ("method", "string"), ("mean", "float"), ("n", "int"), ("days", "list(string)")]
    assert [r.data for r in value.records] == [
        {"method": "melu", "mean": 0.5, "n": 3, "days": "['2026-01-01']"},
        {"method": "paml", "mean": None, "n": None, "days": "[]"}]


def test_the_primary_frame_gives_row_count_and_column_schema():
    bundle = Bundle(frames={"interactions": pl.DataFrame({"user_id": ["u1", "u2", "u3"], "label": [1.0, 0.0, 1.0]}),
                            "malformed": pl.DataFrame({"line": [7]})})
    metadata = canonical_metadata("clean_logs", bundle)
    assert metadata["dagster/row_count"] == 3
    assert metadata["dagster/column_schema"] == column_schema(bundle.frames["interactions"].schema)
    assert [r.data["frame"] for r in metadata["frames"].records] == ["interactions", "malformed"]
    assert "dagster/row_count" not in canonical_metadata("no_such_asset", bundle)


def test_plots_stay_small_enough_to_render_inline():
    for epochs in (1, 8, 200):
        curves = {"train loss": [1 / (e + 1) for e in range(epochs)], "validation loss": [math.nan] + [0.5] * (epochs - 1)}
        value = inline_plot(curves, "mean over seeds by epoch")
        assert value is not None and len(value.value) < INLINE_MARKDOWN_LIMIT
        assert value.value.count("data:image/svg+xml;base64,") == 1
    assert inline_plot({"empty": [math.nan]}, "nothing") is None
