"""The polars reading of JSON lines (assets/json_lines_fast.py) gives the frames of the line-by-line Python
reader (assets/json_lines.py): compared on many small random files, and on each case where a line, or
the whole file, is left to Python."""

import json
import random
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from assets.json_lines import json_keys, read_json_lines
from assets.json_lines_fast import decoded_file, decoded_lines, polars_rows
from assets.raw_text import decoding_of

COLUMNS = ("a", "b", "user_id", "stars")  # the fields a spec reads; lines hold others too
STRINGS = ["x", "", "café", "東京", "😀", 'say "hi"', "back\\slash", "line\nbreak", "tab\t", "a/b", "\u00e9\u0301",
           "5", "5.0", "-0", "1e5", "007", "0.1", "4.50", "true", "null", "NaN", "Infinity War", "[1]", "{x}",
           "x NaN y", "\\NaN", "a: NaN,",
           "2016-03-09 00:00:00", '"user_id": 1', "\x7f", "\u2028", "\ufeff", "a\u0000b"]
NUMBERS = [0, 1, -1, 5, 2**53, 2**53 + 1, -(2**63), 2**64 + 1, 10**30, 5.0, -0.0, 0.5, 4.5, 1e300, 1e-7, 1.5e-7,
           0.0001, 0.00012, 1e16, 1e15, 123456789012345.6, 12345678901234.5, 0.1 + 0.2, 5e-324, 1.7976931348623157e308,
           1e22, 9007199254740993.0, 1700000000.0]


def random_number(rng: random.Random) -> int | float:
    """A number of the kinds JSON files hold, with the edge cases of how each is written as text."""
    pick = rng.random()
    if pick < 0.4:
        return rng.choice(NUMBERS)
    if pick < 0.6:
        return rng.randint(-10**6, 10**6)
    if pick < 0.8:
        return round(rng.uniform(-1000, 1000), rng.randint(0, 6))
    return rng.uniform(-1, 1) * 10.0 ** rng.randint(-30, 30)


def random_value(rng: random.Random, depth: int = 0):
    """A JSON value: mostly scalars, sometimes a list (with nulls, empty, nested) or an object."""
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(STRINGS) if rng.random() < 0.7 else "".join(rng.choice("ab\"\\/é😀\n ") for _ in range(4))
    if pick < 0.6:
        return random_number(rng)
    if pick < 0.7:
        return rng.choice([True, False, None])
    if pick < 0.85 or depth:
        return [random_value(rng, depth + 1) if rng.random() < 0.15 else rng.choice([None, 1, "x", 2.5, "5.0", True])
                for _ in range(rng.randint(0, 3))]
    return {rng.choice(["a", "x", "user_id"]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}


def random_line(rng: random.Random) -> str:
    """One line: usually an object written by json.dumps (in either ASCII mode), sometimes a line JSON
    readers disagree on or that is no object at all."""
    keys = rng.sample(COLUMNS + ("text", "other", "nested"), rng.randint(0, 6))
    record = {k: random_value(rng) for k in keys}
    if "nested" in record and rng.random() < 0.5:
        record["nested"] = {"user_id": random_value(rng), "stars": {"a": [1, {"b": None}]}}
    text = json.dumps(record, ensure_ascii=rng.random() < 0.5, separators=rng.choice([(", ", ": "), (",", ":")]))
    pick = rng.random()
    if pick < 0.75:
        return text
    changes = [
        lambda t: "", lambda t: "   ", lambda t: t[: len(t) // 2], lambda t: "[1, 2]", lambda t: "5", lambda t: "null",
        lambda t: t.replace('"', "'"), lambda t: t + " ", lambda t: " " + t, lambda t: t + "}", lambda t: t + t,
        lambda t: t[:-1] + ', "a": NaN}' if len(t) > 2 else t, lambda t: t[:-1] + ', "other": Infinity}' if len(t) > 2 else t,
        lambda t: t[:-1] + ', "a": 1, "a": 2}' if len(t) > 2 else t,
        lambda t: '{"a\\u0062": 1, "b": 2}' if rng.random() < 0.5 else '{"b": 2, "\\u0062": 3}',
        lambda t: '{"a": "\\ud83d\\ude00", "text": "\\ud800"}', lambda t: '{"a": "raw\ttab"}',
        lambda t: '{"a": 1e400}', lambda t: '{"a": 1E5, "b": -0, "stars": 5.00}', lambda t: t + "\r",
        lambda t: '{"a": 123456789012345678901234567890123456789012345}', lambda t: t.replace(":", " : "),
        lambda t: '{"a": null, "b": [null], "user_id": []}', lambda t: '{"text": "\\\\ud800\\ude00"}',
        lambda t: t[:-1] + ', "stars": null, "a": [1, NaN]}' if len(t) > 2 else t,
        lambda t: t[:-1] + ', "nested": {"a": null, "user_id": NaN}}' if len(t) > 2 else t,
        lambda t: t[:-1] + ', "b": null, "b": null}' if len(t) > 2 else t, lambda t: t[:-1] + ', "b":NaN}' if len(t) > 2 else t,
        lambda t: '{"a": NaN, "user_id": "u1", "stars":NaN}', lambda t: '{"a": NaN, "a": NaN, "b": null, "b": NaN}',
        lambda t: '{"x": {"a": NaN}, "stars": NaN}', lambda t: '{"user_id": "u1", "text": "{\\"a\\": NaN", "a" :\tNaN}',
        lambda t: '{"a": 1, "a": 2}' if rng.random() < 0.5 else '{"a": 1, "a": 1, "b": [1], "b": [1, 2]}',
    ]
    return rng.choice(changes)(text)


def write_file(path: Path, rng: random.Random) -> Path:
    lines = [random_line(rng) for _ in range(rng.randint(1, 12))]
    text = "\n".join(lines) + ("\n" if rng.random() < 0.85 else "")
    data = text.encode("utf-8", errors="surrogatepass")
    if rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    return path


def read_both(path: Path, used: frozenset[str] | None = None) -> tuple[object, object]:
    """Each reader's (rows, malformed), or the exception it raised (type and message)."""
    out = []
    for fast in (True, False):
        try:
            out.append(read_json_lines(path, "r.json", COLUMNS, used=used, fast=fast))
        except Exception as error:  # the same error from both readers is the same result
            out.append((type(error).__name__, str(error)))
    return out[0], out[1]


def assert_same(fast, python) -> None:
    if isinstance(python[0], str):
        assert fast == python
        return
    assert not isinstance(fast[0], str), fast
    for mine, theirs in zip(fast, python):
        assert_frame_equal(mine, theirs)


def test_random_files_read_the_same_with_polars_as_in_python(tmp_path, monkeypatch):
    monkeypatch.setattr("assets.json_lines_fast.PIECE_LINES", 1)  # a file polars stops on is halved down to single lines
    rng = random.Random(20261130)
    lines = lines_by_polars = 0
    for k in range(300):
        path = write_file(tmp_path / f"f{k}.json", rng)
        used = frozenset(rng.sample(COLUMNS, rng.randint(1, len(COLUMNS))))
        fast, python = read_both(path, used)
        try:
            assert_same(fast, python)
        except AssertionError:
            print(path.read_bytes())
            raise
        if not isinstance(fast[0], str):
            lines += path.read_bytes().count(b"\n")
            lines_by_polars += path.read_bytes().count(b"\n") - len(python_lines(path, [c for c in COLUMNS if c in used]))
    # The comparison means something only when polars read many of the lines.
    assert lines_by_polars >= 600 and lines_by_polars >= lines // 3, (lines, lines_by_polars)  # 910 of 1952


def test_random_numbers_read_the_same_with_polars_as_in_python(tmp_path):
    rng = random.Random(7)
    lines_by_polars = 0
    for k in range(20):
        records = [{"a": random_number(rng), "b": str(random_number(rng)) if rng.random() < 0.5 else rng.choice(STRINGS),
                    "user_id": [random_number(rng) for _ in range(rng.randint(0, 2))] if k % 4 == 0
                    else round(rng.uniform(-1e6, 1e6), rng.randint(0, 9))}
                   for _ in range(100)]
        path = write_lines(tmp_path / f"n{k}.json", [json.dumps(r) for r in records])
        assert_same(*read_both(path, frozenset({"a", "b", "user_id"})))
        lines_by_polars += len(records) - len(python_lines(path, ["a", "b", "user_id"]))
    assert lines_by_polars >= 500, lines_by_polars


def write_lines(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_bytes((end.join(lines) + end).encode("utf-8", errors="surrogatepass"))
    return path


GOOD = [json.dumps({"user_id": f"u{k}", "a": k, "stars": 4.0, "text": "long text, not read"}) for k in range(4)]


def python_lines(path: Path, kept: list[str]) -> list[int]:
    """The lines the polars reading leaves to Python."""
    decoded, _ = decoded_file(decoding_of(path, "r.json", "utf-8"), kept)
    return decoded.filter(pl.col("_python").is_not_null())["line"].to_list()


@pytest.mark.parametrize(("line", "why"), [
    ('{"user_id": "u9", "a": 1, "a": {"x": 1}}', "a key twice: Python keeps the last"),
    ('{"user_id": "u9", "\\u0061": 1, "a": 2}', "a key twice, once spelled with an escape"),
    ('{"user_id": "u9", "a": 1e300}', "1e+300 in Python, digits in polars"),
    ('{"user_id": "u9", "a": -0.0}', "0 in Python, -0 in polars"),
    ('{"user_id": "u9", "a": 1e-7}', "1e-07 in Python"),
    ('{"user_id": "u9", "a": 9007199254740993}', "an integer past 2**53, or a float written so"),
    ('{"user_id": "u9", "a": "5.0"}', "text that polars also writes for a number"),
    ('{"user_id": "u9", "a": "\\ud800"}', "a lone surrogate: NUL in polars"),
    ('{"user_id": "u9", "a": {"x": 1}}', "an object: a rejected row"),
    ('{"user_id": "u9", "a": 1, "text": Infinity}', "Infinity: Python reads it, polars stops"),
    ('{"user_id": "u9", "a": 5, "a": null}', "a key twice, null last: Python keeps the null"),
    ('{"user_id": "u9", "a": null, "a": 5}', "a key twice, null first: polars keeps the null"),
    ('{"user_id": "u9", "a": 5, "x": {"a": null}}', "a used key also written, null, in an object"),
    ('{"user_id": "u9 NaN", "a": 1}', "NaN in a used string, which reads null to polars"),
    ('{"user_id": "u9", "a": 1, "b": "\\NaN"}', "a backslash before NaN: an escape once it is null"),
    ('{"user_id": "u9", "x": {"a": NaN}}', "a used key written NaN in an object: Python reads the line's a as missing"),
    ('{"user_id": "u9", "a": NaN, "x": {"b": 1}}', "NaN on a line with an object inside: whose is not sure"),
    ('{"user_id": "u9", "a": NaN, "text": "{"}', "a brace in a string counts as an object"),
    ('{"user_id": "u9", "a": NaN, "a": null}', "a key twice, NaN and null: a rejected row"),
    ('{"user_id": "u9"', "cut off"),
    ('', "blank"),
    ('[1, 2]', "not an object"),
    (' {"user_id": "u9"}', "a space before the object"),
])
def test_a_line_polars_may_read_otherwise_is_read_in_python(tmp_path, line, why):
    path = write_lines(tmp_path / "r.json", GOOD[:2] + [line] + GOOD[2:])
    kept = ["a", "user_id", "stars"]
    assert python_lines(path, kept) == [3], why
    if "surrogate" in why:  # Python's reader cannot make a frame of it; the polars reading leaves it that line
        return
    fast = polars_rows(decoding_of(path, "r.json", "utf-8"), kept)
    assert fast is not None
    assert_same(*read_both(path, frozenset(kept)))


@pytest.mark.parametrize(("line", "why"), [
    ('{"user_id": "u9", "a": 1} {"a": 2}', "two objects on one line"),
    ('{"user_id": "u9", "a": "raw\ttab"}', "a raw control character in a string"),
    ('{"user_id": "u9", "a": 1e400}', "a number past a double: inf in Python"),
    ('{"user_id": "u9", "a": [[1]]}', "a list of lists"),
    ('{"user_id": "\\\\ud800\\udc00"}', "a lone low surrogate after an escaped backslash"),
])
def test_a_line_polars_stops_on_is_found_and_read_in_python(tmp_path, monkeypatch, line, why):
    monkeypatch.setattr("assets.json_lines_fast.BLOCK_LINES", 4)  # blocks of the file's lines: 4, 4, 1
    monkeypatch.setattr("assets.json_lines_fast.PIECE_LINES", 1)  # halved down to the line
    path = write_lines(tmp_path / "r.json", GOOD + GOOD[:3] + [line] + GOOD[3:])
    decoding = decoding_of(path, "r.json", "utf-8")
    with pytest.raises(pl.exceptions.PolarsError):
        decoded_lines(decoding, ["a", "user_id"], lists=True)
    assert python_lines(path, ["a", "user_id"]) == [8]
    assert_same(*read_both(path, frozenset({"a", "user_id"})))


def test_many_lines_polars_stops_on_cost_a_bounded_number_of_decodings(tmp_path, monkeypatch):
    # One line in a hundred holds a raw tab (as scraped review text may): halving each block down to single
    # lines took a decoding per few lines, 30 s for 200,000 lines that Python reads in 0.6 s.
    import assets.json_lines_fast as fast

    decodings = []
    real = fast.decoding_query
    monkeypatch.setattr(fast, "decoding_query", lambda *a, **k: decodings.append(1) or real(*a, **k))
    lines = [json.dumps({"user_id": f"u{k}", "a": k}) if k % 100 else '{"user_id": "u", "a": "raw\ttab"}'
             for k in range(8192)]
    path = write_lines(tmp_path / "r.json", lines)
    assert_same(*read_both(path, frozenset({"a", "user_id"})))
    decodings.clear()
    decoded_file(decoding_of(path, "r.json", "utf-8"), ["a", "user_id"])
    # The whole file once, then its block and its halves down to pieces of 1,024 lines: 1 + 1 + 2 + 4 + 8.
    assert len(decodings) <= 16, len(decodings)


def test_a_file_in_another_encoding_is_read_in_python(tmp_path):
    path = tmp_path / "r.json"
    path.write_bytes('{"user_id": "Jos\u00e9", "a": 1}\n'.encode("latin-1"))
    decoding = decoding_of(path, "r.json", "latin-1")
    assert decoding.encoding == "latin-1" and polars_rows(decoding, ["a", "user_id"]) is None
    rows, _ = read_json_lines(path, "r.json", COLUMNS, encoding="latin-1", used=frozenset({"a", "user_id"}))
    assert rows["user_id"].to_list() == ["José"]


def test_list_fields_make_list_columns_as_in_python(tmp_path):
    lines = [json.dumps({"user_id": "u1", "a": ["Books"], "b": "x"}), json.dumps({"user_id": "u2", "a": "Pizza", "b": None}),
             json.dumps({"user_id": "u3", "a": None, "b": "y"}), json.dumps({"user_id": "u4", "a": [], "b": "[not a list]"})]
    path = write_lines(tmp_path / "r.json", lines)
    assert python_lines(path, ["a", "b", "user_id"]) == []  # b, then a, null: read by polars too
    rows, bad = polars_rows(decoding_of(path, "r.json", "utf-8"), ["a", "b", "user_id"])
    assert rows["a"].to_list() == [["Books"], ["Pizza"], None, []] and rows["b"].dtype == pl.String
    assert_same(*read_both(path, frozenset({"a", "b", "user_id"})))


def test_yelp_and_amazon_like_lines_are_all_read_by_polars(tmp_path):
    reviews = [{"review_id": "r1", "user_id": "Miua4Bw5fo7q6ETcv1SC0f", "business_id": "v6rY-vSE0jNDTa9naPCx47",
                "stars": 4.0, "useful": 19, "text": 'Great "pizza" \u6771\u4eac \U0001f600\nagain', "date": "2014-08-24 17:46:39"},
               {"overall": 5.0, "verified": True, "reviewerID": "AT59Z94QBTEE2F", "asin": "0000013714",
                "style": {"Format:": " Paperback"}, "unixReviewTime": 1161295741, "image": ["https://x/1.jpg"], "vote": "2"}]
    lines = [json.dumps(r, ensure_ascii=k % 2 == 0) for k in range(6) for r in reviews]
    path = write_lines(tmp_path / "r.json", lines)
    kept = ["user_id", "business_id", "stars", "date", "reviewerID", "asin", "overall", "unixReviewTime"]
    assert python_lines(path, kept) == []  # fields absent from a line are no reason for Python
    rows, _ = polars_rows(decoding_of(path, "r.json", "utf-8"), kept)
    assert rows["stars"].to_list()[:2] == ["4", None] and rows["asin"][1] == "0000013714"


def test_a_key_spelled_with_escapes_is_read_by_polars_as_by_python(tmp_path):
    lines = GOOD + ['{"user_\\u0069d": "u9", "\\u0061": [7], "st\\u0041rs": 1}', '{"user_id": "u10", "a": "x"}']
    path = write_lines(tmp_path / "r.json", lines)
    assert python_lines(path, ["a", "user_id"]) == []
    rows, _ = polars_rows(decoding_of(path, "r.json", "utf-8"), ["a", "user_id"])
    assert rows.row(4) == (5, ["7"], "u9") and rows.row(5) == (6, ["x"], "u10")  # "stArs" is another key
    assert_same(*read_both(path, frozenset({"a", "user_id"})))


def test_a_file_of_crlf_line_ends_is_read_by_polars_as_by_python(tmp_path):
    path = write_lines(tmp_path / "r.json", GOOD + ['{"user_id": "u9", "a": [1, 2]}'], end="\r\n")  # a Windows export
    assert python_lines(path, ["a", "user_id"]) == []  # the CR is no reason for Python
    assert_same(*read_both(path, frozenset({"a", "user_id"})))
    bad = write_lines(tmp_path / "bad.json", GOOD + ["{not json}"], end="\r\n")
    fast, python = read_both(bad, frozenset({"a", "user_id"}))
    assert_same(fast, python)
    assert fast[1]["text"].to_list() == ["{not json}"]  # named without its CR


def test_a_file_of_cr_line_ends_alone_is_read_line_by_line_by_both_readers(tmp_path, monkeypatch):
    # Old Mac line ends: read with LF as the line end, the whole file was one line, rejected as not JSON.
    lines = GOOD[:2] + ["", '{"user_id": "u9", "a": null}', "[1, 2]", '{"user_id": "u8", "a": [1, 2]}', '{"user_id": "u7"']
    path = tmp_path / "r.json"
    path.write_bytes("\r".join(lines).encode())  # the last line cut off, without its CR
    fast, python = read_both(path, frozenset({"a", "user_id"}))
    assert_same(fast, python)
    rows, bad = fast
    assert rows["line"].to_list() == [1, 2, 4, 6] and rows["a"].to_list() == [["0"], ["1"], None, ["1", "2"]]
    assert bad["line"].to_list() == [3, 5, 7] and bad["text"].to_list() == ["", "[1, 2]", '{"user_id": "u7"']
    assert bad["reason"][2].endswith("(last line has no line ending: file cut off?)")
    assert python_lines(path, ["a", "user_id"]) == [3, 5, 7]  # polars read the others
    monkeypatch.setattr("assets.json_lines_fast.BLOCK_LINES", 2)  # read block by block (a line polars stops on)
    monkeypatch.setattr("assets.json_lines_fast.PIECE_LINES", 1)
    path.write_bytes("\r".join(lines[:4] + ['{"a": "raw\ttab", "user_id": "u6"}'] + lines[5:]).encode())
    assert_same(*read_both(path, frozenset({"a", "user_id"})))
    assert json_keys(path, "utf-8") == ("user_id", "a", "stars", "text")  # a spec without `columns`


def test_random_files_of_cr_line_ends_read_the_same_with_polars_as_in_python(tmp_path):
    rng = random.Random(1984)
    lines_by_polars = 0
    for k in range(100):
        text = "\r".join(random_line(rng).replace("\r", "") for _ in range(rng.randint(1, 12)))
        path = tmp_path / f"f{k}.json"
        path.write_bytes((text + ("\r" if rng.random() < 0.85 else "")).encode("utf-8", errors="surrogatepass"))
        used = frozenset(rng.sample(COLUMNS, rng.randint(1, len(COLUMNS))))
        fast, python = read_both(path, used)
        assert_same(fast, python)
        if not isinstance(fast[0], str):
            read = fast[0].height + fast[1].height
            lines_by_polars += read - len(python_lines(path, [c for c in COLUMNS if c in used]))
    assert lines_by_polars >= 150, lines_by_polars


def test_a_cr_alone_in_a_file_of_lf_line_ends_is_named_in_the_rejection(tmp_path):
    path = write_lines(tmp_path / "r.json", GOOD + [GOOD[0] + "\r" + GOOD[1]])  # two objects joined by an old Mac line end
    fast, python = read_both(path, frozenset({"a", "user_id"}))
    assert_same(fast, python)
    assert fast[1]["reason"].to_list() == ["not valid JSON: Extra data at character 72 (the line holds a carriage return "
                                           "(CR) alone: two records joined by an old Mac line end, or a stray CR in a field?)"]


def test_null_fields_and_nan_are_read_by_polars_as_by_python(tmp_path):
    # 30 % of a log's ratings null (or NaN, as Python's json.dumps writes a missing float) sent 30 % of its
    # lines to Python, which reads them about 5 times slower.
    lines = GOOD + ['{"user_id": "u9", "a": null, "stars": null}', '{"user_id": null, "a": NaN, "text": "NaN or null"}',
                    '{"user_id": "u8", "a": [1, NaN, null], "stars": NaN}', '{"user_id": "u7", "a": 2, "x": {"b": null}}',
                    '{"user_id": "u6", "a" : null, "x": {"a": null}, "stars": -0.5}', '{"user_id": "u5", "stars": NaN}']
    path = write_lines(tmp_path / "r.json", lines)
    kept = ["a", "user_id", "stars"]
    assert python_lines(path, kept) == []
    fast, python = read_both(path, frozenset(kept))
    assert_same(fast, python)
    # NaN reads as the text 'NaN' (as a CSV's; a missing value to cleaning), and as missing inside a list.
    assert fast[0].select("a", "stars").rows()[4:] == [
        (None, None), (["NaN"], None), (["1", None, None], "NaN"), (["2"], None), (None, "-0.5"), (None, "NaN")]
    # A used key whose name holds NaN or null: a NaN line is Python's (its change could make or unmake that key).
    path = write_lines(tmp_path / "k.json", ['{"isNaN": 1, "x": NaN}', '{"isNaN": 2, "x": 1}', '{"xnull": 3, "x": NaN}'])
    assert python_lines(path, ["isNaN"]) == python_lines(path, ["xnull"]) == [1, 2, 3]  # any NaN, as before NaN was read
    for used in ("isNaN", "xnull"):
        out = []
        for fast_path in (True, False):
            out.append(read_json_lines(path, "k.json", ("isNaN", "xnull", "x"), used=frozenset({used, "x"}), fast=fast_path))
        assert_same(*out)
