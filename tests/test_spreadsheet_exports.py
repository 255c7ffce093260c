"""Logs and feature tables as people export them from spreadsheets and data tools: Excel in a European
locale (';', decimal commas, cp1252, CRLF, padded columns), R's write.csv, pandas' to_csv, Google Sheets.
Each fixture is made up in code, in the layout such an export writes."""

from pathlib import Path

import polars as pl
import pytest

from assets.bundle import Bundle
from assets.clean_logs import CleaningError, clean_logs_from_raw
from assets.custom_reader import read_custom
from assets.dataset_spec import SpecError, load_spec

SPEC = """\
name = "sheet"
[label]
{label}
[interactions]
file = "log.csv"
user_id = "user"
item_id = "item"
label = "rating"
timestamp = "ts"
{interactions}
[users]
file = "users.csv"
id = "user"
{users}
[users.features]
age = {{ type = "numeric", min = 10, max = 90 }}
country = {{ type = "categorical" }}
[items]
file = "items.csv"
id = "item"
{items}
[items.features]
genre = {{ type = "categorical" }}
price = {{ type = "numeric", min = 0, max = 100 }}
"""
RATING = 'kind = "rating"\nmin = 0.5\nmax = 5\nstep = 0.5'
LOG = ["user,item,rating,ts", "1,a,4.5,1700000000", "1,b,3,1700000060", "2,a,2,1700000120", "2,c,5,1700000180",
       "3,b,1.5,1700000240", "3,c,4,1700000300"]
USERS = ["user,age,country", "1,30,de", "2,40,at", "3,50,ch"]
ITEMS = ["item,genre,price", "a,drama,3.5", "b,comedy,4", "c,action,12.25"]


def sheet_dir(root: Path, log: list[str] = LOG, users: list[str] = USERS, items: list[str] = ITEMS, *,
              label: str = RATING, interactions: str = "", users_keys: str = "", items_keys: str = "",
              encoding: str = "utf-8", newline: str = "\n", bom: bytes = b"") -> Path:
    """A log (log.csv), users.csv and items.csv written as an export writes them, and the spec reading them;
    `interactions`, `users_keys` and `items_keys` are extra keys of those sections."""
    root.mkdir(parents=True, exist_ok=True)
    for name, lines in (("log.csv", log), ("users.csv", users), ("items.csv", items)):
        (root / name).write_bytes(bom + (newline.join(lines) + newline).encode(encoding))
    (root / "dataset.toml").write_text(SPEC.format(label=label, interactions=interactions, users=users_keys,
                                                   items=items_keys), encoding="utf-8")
    return root


def cleaned(directory: Path) -> Bundle:
    dataset = load_spec(directory)
    return clean_logs_from_raw(read_custom(dataset), dataset.spec)


def test_the_plain_export_reads_whole(tmp_path):
    bundle = cleaned(sheet_dir(tmp_path))
    assert bundle.frame("rejected").height == 0
    assert sorted(bundle.frame("interactions")["label"]) == [1.5, 2.0, 3.0, 4.0, 4.5, 5.0]


def test_excel_and_pandas_missing_markers_are_missing_in_users_and_items(tmp_path):
    # Excel writes a lookup that found nothing as #N/A; pandas writes a missing text value as nan.
    users = ["user,age,country", "1,30,#N/A", "2,40,nan", "3,50,ch"]
    items = ["item,genre,price", "a,#N/A,3.5", "b,nan,4", "c,action,#N/A"]
    directory = sheet_dir(tmp_path, users=users, items=items)
    bundle = cleaned(directory)
    rejected = bundle.frame("rejected").filter(pl.col("source_file").str.ends_with("users.csv"))
    assert rejected.select("line", "reason", "value").rows()[:2] == [(2, "country missing", "#N/A"),
                                                                     (3, "country missing", "nan")]
    items_ = bundle.frame("items").sort("item_id")
    assert items_["genre"].to_list() == [None, None, "action"] and items_["price"].to_list()[2] is None
