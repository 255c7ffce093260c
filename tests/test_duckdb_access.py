"""Querying DuckDB while another process writes: the snapshot is never locked, live reads wait."""

import subprocess
import sys
import textwrap
import time

import polars as pl

from assets.bundle import Bundle
from pipelines.store import LineageStore

HOLD_SECONDS = 2.0


def hold_write_lock(db_path, seconds: float) -> subprocess.Popen:
    """Another process that opens the database read-write and keeps it for `seconds`."""
    code = textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(db_path)!r})
        print("locked", flush=True)
        time.sleep({seconds})
        con.close()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def tiny_bundle(value: int) -> Bundle:
    return Bundle(frames={"t": pl.DataFrame({"x": [value]})})


def test_snapshot_follows_every_write(tmp_path):
    store = LineageStore(tmp_path)
    row = store.record(tiny_bundle(1), run_id="r1", job_name="j", asset_key="a", partition="p",
                       code_version="1", inputs=[], mirrors={})
    assert store.query("SELECT artifact_id FROM artifacts", snapshot=True)["artifact_id"].to_list() == [row.artifact_id]


def test_readers_are_never_refused_while_a_writer_holds_the_file(tmp_path):
    store = LineageStore(tmp_path)
    store.record(tiny_bundle(1), run_id="r1", job_name="j", asset_key="a", partition="p",
                 code_version="1", inputs=[], mirrors={})
    holder = hold_write_lock(store.db_path, HOLD_SECONDS)
    try:
        start = time.monotonic()
        assert store.query("SELECT count(*) FROM artifacts", snapshot=True).item() == 1
        assert time.monotonic() - start < HOLD_SECONDS / 2  # the snapshot does not wait for the writer
        # A live read and a second writer wait for the lock instead of failing; no write is lost.
        second = store.record(tiny_bundle(2), run_id="r2", job_name="j", asset_key="a", partition="p",
                              code_version="1", inputs=[], mirrors={})
        assert time.monotonic() - start >= HOLD_SECONDS * 0.5
        assert store.query("SELECT count(*) FROM artifacts").item() == 2
    finally:
        holder.wait(timeout=30)
    assert store.latest("a", "p").artifact_id == second.artifact_id
    assert store.query("SELECT count(*) FROM artifacts", snapshot=True).item() == 2
