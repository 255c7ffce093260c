"""Asset `raw_logs`: each dataset's raw files read as text frames, with their file hashes.

Every dataset with a spec file is read as it says (assets/custom_reader.py): MovieLens and
Book-Crossing from PAML_DATA_DIR with their built-in specs (assets/builtin_specs/), a dataset
registered with `dataset add` with its own. The `taobao` partition is the log window
`taobao_log_window`, read with its built-in spec from the daily log partitions (assets/taobao_logs.py).
"""


from dataclasses import asdict
from pathlib import Path

import dagster as dg

from assets.bundle import Bundle
from assets.custom_reader import read_builtin, read_custom
from assets.dataset_spec import load_registered, registered_names
from assets.domains import STRAY_BOOLEAN_HINT
from pipelines.outputs import bundle_output
from pipelines.partitions import TAOBAO_ONLY, dataset_partitions
from pipelines.resources import PamlResource


def read_raw(dataset: str, data_dir: Path, taobao_window: Bundle | None = None) -> Bundle:
    """Read one dataset's raw files; taobao is its log window, built upstream."""
    if dataset in ("movielens", "bookcrossing"):
        return read_builtin(dataset, data_dir)
    if dataset in registered_names():
        return read_custom(load_registered(dataset))
    if dataset != "taobao":
        raise ValueError(f"unknown dataset {dataset!r}")
    if taobao_window is None:
        raise ValueError("raw_logs[taobao] needs its log window: materialize taobao_daily_logs for some days, "
                         "then taobao_log_window")
    return taobao_window


def reader_facts(copies_before: dict[str, int], copies_after: dict[str, int], lines_before: dict[str, int],
                 lines_after: dict[str, int]) -> list[str]:
    """Log lines on what one read decompressed (`copies_written`) and how its JSON lines were read
    (`lines_read`): the counts' differences, nothing where a read added none."""
    out = []
    files, size = (copies_after[k] - copies_before[k] for k in ("files", "bytes"))
    if files:
        out.append(f"decompressed {files} compressed file(s), {size / 2**20:.1f} MiB of text, into PAML_HOME/decompressed "
                   "(a later read uses the copies)")
    polars, python = (lines_after[k] - lines_before[k] for k in ("polars", "python"))
    if polars or python:
        out.append(f"JSON lines: {polars:,} read by polars, {python:,} in Python ({polars / (polars + python):.1%} by polars)")
    return out


def some_paths(paths: list[str], most: int = 8) -> str:
    """The paths for a log line: all of up to `most`, else the first and the last few (a year of daily
    logs is 365 files; every one, with its SHA-256, is in the asset's `raw_files` metadata)."""
    if len(paths) <= most:
        return ", ".join(paths)
    head, tail = paths[:most - 3], paths[-2:]
    return (", ".join(head) + f", ... ({len(paths) - len(head) - len(tail)} more), " + ", ".join(tail)
            + " (all of them: the raw_files metadata)")


@dg.asset(
    partitions_def=dataset_partitions, group_name="data", kinds={"polars", "csv"}, code_version="4",
    ins={"taobao_log_window": dg.AssetIn(partition_mapping=TAOBAO_ONLY)},
    description="Raw files of one dataset read as text frames (no cleaning), with file hashes; taobao: its log window.",
)
def raw_logs(context: dg.AssetExecutionContext, paml: PamlResource, taobao_log_window: Bundle | None) -> dg.Output[Bundle]:
    from assets.compressed import copies_written
    from assets.json_lines import lines_read

    copies, lines = copies_written(), lines_read()
    bundle = read_raw(context.partition_key, paml.data_path, taobao_log_window)
    for line in reader_facts(copies, copies_written(), lines, lines_read()):
        context.log.info(line)
    context.log.info(f"read {len(bundle.sources)} raw files: {some_paths([s.path for s in bundle.sources])}")
    if bundle.info.get("decoded_as"):
        context.log.warning(f"read in another encoding than declared: {bundle.info['decoded_as']}")
    for label, line in bundle.info.get("unterminated", {}).items():
        context.log.warning(f"{label} ends without a line ending ({line}; kept as read when it parses): if the file "
                            "was cut short (an interrupted download), fetch it again")
    if bundle.info.get("whole_float_ids"):
        context.log.info(f"ids written as whole-number floats read as integers ('7.0' as '7'), values per file and "
                         f"column: {bundle.info['whole_float_ids']}")
    if bundle.info.get("stray_boolean_labels"):
        context.log.warning(f"click labels written true or false in files whose other labels are not, rejected in "
                            f"cleaning (label not a number), per file: {bundle.info['stray_boolean_labels']}; "
                            f"{STRAY_BOOLEAN_HINT}")
    if bundle.info.get("varying_log_features"):
        context.log.warning(f"features read from the log take each id's first line; ids whose lines hold other values, "
                            f"per feature column: {bundle.info['varying_log_features']}")
    for label, hint in bundle.info.get("id_column_hints", {}).items():
        context.log.warning(f"{label}: {hint} (every log row naming an id it does not hold is rejected as unknown)")
    return bundle_output(bundle, raw_files=dg.MetadataValue.json([asdict(s) for s in bundle.sources]))
