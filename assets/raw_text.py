"""Decoding raw text files strictly, in the encoding their dataset declares.

A raw file is checked once, as bytes, before any of its rows is read:

- a UTF-8 byte-order mark is removed (it would otherwise glue itself to the first id);
- a UTF-16/UTF-32 byte-order mark, or a NUL byte anywhere (UTF-16 without a mark), stops
  the read: such a file is not text in the declared encoding;
- bytes that are not valid in the declared encoding stop the read;
- a file declared in a single-byte encoding (ISO-8859-1 decodes every byte, so it can never
  fail) that is valid UTF-8 and holds non-ASCII text is read as UTF-8: a real ISO-8859-1 text
  is almost never valid UTF-8, while reading a UTF-8 copy as ISO-8859-1 would turn every
  accented letter into two characters of mojibake;
- such a file that is mostly UTF-8 but holds a few bytes that are not (a UTF-8 copy edited in
  another encoding, files of two encodings concatenated) stops the read: neither encoding reads
  it whole, and read as ISO-8859-1 all its UTF-8 text would be mojibake;
- an empty file stops the read.

A file whose lines end with a carriage return alone (CR, old Mac OS) and that holds no line feed
is read with CR as its line end (`Decoding.line_end`); in any other file a lone CR is a character
of its line, and the line readers name it when it breaks the line (assets/raw_files.py).
A gzip, bzip2 or xz file (or a zip archive of one file) is checked and read as the text it holds:
its decompressed copy (assets/compressed.py) is `Decoding.source`, while messages name the file.

Every error is a `RawFileError` naming the file, the encoding, and the line and byte of the
first offending byte, so nothing is quietly turned into "malformed" or "garbled" rows.
"""

from __future__ import annotations

import codecs
import functools
from dataclasses import dataclass
from pathlib import Path

import polars as pl

CHUNK_BYTES = 1 << 24  # files are scanned in 16 MiB pieces: bounded memory on any size
UTF8_BOM = codecs.BOM_UTF8
# Longest first: the UTF-32-LE mark starts with the UTF-16-LE one.
WIDE_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "UTF-32-LE"), (codecs.BOM_UTF32_BE, "UTF-32-BE"),
    (codecs.BOM_UTF16_LE, "UTF-16-LE"), (codecs.BOM_UTF16_BE, "UTF-16-BE"),
)


class RawFileError(ValueError):
    """A raw file that cannot be read as its dataset declares; the message names file and place."""


class RawEncodingError(RawFileError):
    """The file's bytes are not text in the declared encoding."""


class EmptyRawFileError(RawFileError):
    """The file holds no data rows."""


class RawHeaderError(RawFileError):
    """The file's header line is not the one the format declares."""


@dataclass(frozen=True)
class Decoding:
    """How a file is decoded.

    Attributes:
        encoding: Python codec name the file is read with ("utf-8" or the declared one).
        declared: the encoding the dataset declares for the file.
        bom_bytes: bytes of a UTF-8 byte-order mark to skip (0 or 3).
        ends_with_newline: False when the last line has no line ending (a cut-off file).
        source: the file whose bytes are the text: the file itself, or its decompressed copy.
        line_end: what ends a line: "\n" (LF, or CRLF), or "\r" in a file of CR line ends alone.
    """

    encoding: str
    declared: str
    bom_bytes: int
    ends_with_newline: bool
    source: Path
    line_end: str = "\n"

    @property
    def switched(self) -> bool:
        """True when the file is read in another encoding than the declared one."""
        return normalize_encoding(self.encoding) != normalize_encoding(self.declared)


def normalize_encoding(name: str) -> str:
    """Python's canonical codec name ('latin-1' and 'ISO-8859-1' are the same codec)."""
    return codecs.lookup(name).name


@functools.lru_cache(maxsize=None)
def is_single_byte(encoding: str) -> bool:
    """True for encodings where every byte is one character (ISO-8859-x, cp125x, koi8-r, ...).

    A multi-byte decoder (UTF-8, Shift-JIS, GBK, ...) holds a lead byte back, waiting for the rest
    of its character; a single-byte one gives a character for every byte or rejects it at once.
    """
    if normalize_encoding(encoding) == "ascii":
        return False
    for byte in range(0x80, 0x100):
        try:
            if codecs.getincrementaldecoder(encoding)(errors="strict").decode(bytes([byte]), final=False) == "":
                return False
        except UnicodeDecodeError:  # a byte the code page leaves undefined (cp1252's 0x81)
            pass
    return True


def position(path: Path, offset: int, line_end: bytes = b"\n") -> tuple[int, int]:
    """The 1-based (line, byte within the line) of byte `offset` of `path`, whose lines end with `line_end`."""
    line, line_start, seen = 1, 0, 0
    with path.open("rb") as handle:
        while seen < offset and (chunk := handle.read(min(CHUNK_BYTES, offset - seen))):
            newlines = chunk.count(line_end)
            if newlines:
                line += newlines
                line_start = seen + chunk.rindex(line_end) + 1
            seen += len(chunk)
    return line, offset - line_start + 1


HEAD_BYTES = 1 << 16  # how much of a file's start `starts_with_cr_line_ends` reads


def starts_with_cr_line_ends(path: Path) -> bool:
    """Whether the file's first HEAD_BYTES hold a CR and no LF: lines ending with CR alone (old Mac OS), as
    `Decoding.line_end` finds from the whole file; for a scan that reads no more than it must."""
    with Path(path).open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    return b"\r" in head and b"\n" not in head


def describe_bytes(path: Path, offset: int, width: int = 4) -> str:
    """The bytes at `offset` in hex, e.g. '0xE9 0x20'."""
    with path.open("rb") as handle:
        handle.seek(offset)
        return " ".join(f"0x{b:02X}" for b in handle.read(width))


HINT_BYTES = 12  # how many bytes either side of a byte that is not UTF-8 `single_byte_hint` shows


def single_byte_hint(path: Path, offset: int) -> str:
    """What the text around byte `offset` reads as in ISO-8859-1 ('Café Film'), and the spec key to set: the usual
    file that is not UTF-8 (MovieLens-100K's u.item, an export of an old spreadsheet) is in a single-byte encoding."""
    with path.open("rb") as handle:
        handle.seek(max(0, offset - HINT_BYTES))
        around = handle.read(offset - max(0, offset - HINT_BYTES) + HINT_BYTES + 1)
    text = around.decode("latin-1").splitlines()
    shown = max(text, key=lambda piece: any(ord(c) > 127 for c in piece)) if text else ""
    return (f" Read as ISO-8859-1 it says {shown.strip()!r}: if that is the text, the file is not UTF-8; set "
            "encoding = \"latin-1\" (or the file's encoding, e.g. cp1252) for this file in the dataset spec.")


def _utf8_cut(chunk: bytes) -> int:
    """Where to cut `chunk` so that no UTF-8 sequence is split (the rest is carried over)."""
    cut = len(chunk)
    # Step back over at most 3 continuation bytes to the lead byte of a possibly open sequence.
    while cut > 0 and len(chunk) - cut < 3 and chunk[cut - 1] & 0xC0 == 0x80:
        cut -= 1
    if cut > 0 and chunk[cut - 1] >= 0xC0:
        cut -= 1
    return cut


@dataclass
class _Scan:
    """What one pass over a file's bytes found (offsets from the file's start)."""

    nul_at: int | None = None
    utf8_error_at: int | None = None
    non_ascii: bool = False
    size: int = 0
    last_byte: bytes = b""
    utf8_chars: int = 0  # non-ASCII characters written as valid UTF-8 sequences
    utf8_invalid: int = 0  # bytes that are no part of a valid UTF-8 sequence
    has_lf: bool = False
    has_cr: bool = False

    @property
    def line_end(self) -> bytes:
        """CR for a file of CR line ends alone (no LF anywhere), else LF (CRLF ends with it too)."""
        return b"\r" if self.has_cr and not self.has_lf else b"\n"


ASCII_BYTES = bytes(range(0x80))  # deleted by bytes.translate to count the bytes that are not ASCII
NOT_LEAD_BYTES = bytes(range(0xC0))  # deleted by bytes.translate to count UTF-8 lead bytes


def count_utf8(piece: bytes) -> tuple[int, int]:
    """(valid non-ASCII UTF-8 characters, bytes that are not UTF-8) in `piece`, which splits no sequence.

    Counted in C, without a pass in Python or a regex over the text. Valid UTF-8 (checked by polars, in
    Rust, without building the text) has one lead byte (0xC0-0xFF) per non-ASCII character. Otherwise
    the piece is decoded with errors="surrogateescape", each byte that is not UTF-8 becoming one lone
    surrogate, which encoding back with errors="ignore" drops; the text's other characters are the ASCII
    bytes and the valid non-ASCII characters.
    """
    if is_utf8(piece):
        return len(piece.translate(None, NOT_LEAD_BYTES)), 0
    text = piece.decode("utf-8", errors="surrogateescape")
    invalid = len(piece) - len(text.encode("utf-8", errors="ignore"))
    ascii_bytes = len(piece) - len(piece.translate(None, ASCII_BYTES))
    return len(text) - ascii_bytes - invalid, invalid


def is_utf8(piece: bytes) -> bool:
    """Whether `piece` is valid UTF-8 (polars' check: five times faster than Python's decode on non-ASCII text)."""
    try:
        pl.Series([piece], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.PolarsError:
        return False
    return True


def scan_bytes(path: Path, start: int) -> _Scan:
    """One pass over the file from byte `start`: first NUL, first invalid UTF-8 byte, any non-ASCII,
    and how many characters are valid UTF-8 and how many bytes are not."""
    scan, carry, offset = _Scan(), b"", start
    with path.open("rb") as handle:
        handle.seek(start)
        while chunk := handle.read(CHUNK_BYTES):
            scan.size += len(chunk)
            scan.last_byte = chunk[-1:]
            scan.has_lf = scan.has_lf or b"\n" in chunk
            scan.has_cr = scan.has_cr or b"\r" in chunk
            if scan.nul_at is None and (nul := chunk.find(b"\x00")) >= 0:
                scan.nul_at = offset + nul
            piece = carry + chunk
            piece_start = offset - len(carry)
            offset += len(chunk)
            cut = _utf8_cut(piece)
            carry, piece = piece[cut:], piece[:cut]
            if piece.isascii():
                continue
            scan.non_ascii = True
            _count(scan, piece, piece_start)
        if carry:  # the file ends inside a multi-byte sequence, or with one
            scan.non_ascii = True
            _count(scan, carry, offset - len(carry))
    return scan


def _count(scan: _Scan, piece: bytes, piece_start: int) -> None:
    """Add `piece`'s valid UTF-8 characters and invalid bytes to `scan`; note the first invalid byte."""
    chars, invalid = count_utf8(piece)
    scan.utf8_chars += chars
    scan.utf8_invalid += invalid
    if invalid and scan.utf8_error_at is None:
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError as error:
            scan.utf8_error_at = piece_start + error.start


def decode_error_at(path: Path, start: int, encoding: str) -> int | None:
    """Offset of the first byte from `start` that is not valid in `encoding`, or None (read in chunks)."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = start
    with path.open("rb") as handle:
        handle.seek(start)
        while True:
            chunk = handle.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of a character the last chunk left open
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                return offset - pending + error.start
            if not chunk:
                return None
            offset += len(chunk)


# The first bytes of compressed files people download or export, and how to get the text out. gzip, xz and
# zip are read (assets/compressed.py decompresses them before this check); what is left here is refused.
ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "zip archive", "unzip it"),
    (b"\x1f\x8b", "gzip-compressed file", "decompress it (gunzip)"),
    (b"\xfd7zXZ\x00", "xz-compressed file", "decompress it (unxz)"),
    (b"(\xb5/\xfd", "zstd-compressed file", "decompress it (unzstd)"),
)  # each holds a byte no text line starts with; bzip2's 'BZh' and Parquet's 'PAR1' could start one


def check_start(path: Path, where: str, declared: str) -> bytes:
    """The first bytes of `path`, or a RawFileError when it cannot be opened (permission denied),
    is a compressed download, or starts with a UTF-16/UTF-32 byte-order mark. `where` names the file."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as error:  # permission denied, a directory, a broken network mount
        raise RawFileError(f"{where}: cannot be read: {error.strerror or error}.") from None
    for magic, what, undo in ARCHIVE_MAGIC:  # zstd; or compressed twice (a .gz of a .gz): what decompressing left
        if head.startswith(magic):
            raise RawEncodingError(f"{where}: a {what}, not {declared} text; {undo} and point the reader at the text file.")
    for mark, name in WIDE_BOMS:
        if head.startswith(mark):
            raise RawEncodingError(
                f"{where}: starts with a {name} byte-order mark; expected {declared} text. "
                f"Convert it, e.g. iconv -f {name} -t {declared}."
            )
    return head


# At most one stray byte per this many UTF-8 characters makes a file "mostly UTF-8" (`mostly_utf8`).
UTF8_CHARS_PER_STRAY_BYTE = 4


def mostly_utf8(scan: _Scan) -> bool:
    """Whether a file with bytes that are not UTF-8 is a UTF-8 text with a few stray bytes (at most one per
    `UTF8_CHARS_PER_STRAY_BYTE` characters written as UTF-8), not a single-byte text.

    A real ISO-8859-1 text has at least about as many bytes that are not UTF-8 as pairs that look like UTF-8,
    even where it holds old mojibake: Book-Crossing's BX-Users.csv has 11,500 such bytes and 16 pairs, and its
    BX-Books.csv as published ('QuerschÃ?Â¼sse' is C3 3F C2 BC: one of each) 522 and 630 in the 27,109 books
    of the shared subset. More pairs than stray bytes, the rule first used, refused that file.
    """
    return scan.utf8_invalid * UTF8_CHARS_PER_STRAY_BYTE <= scan.utf8_chars


def decoding_of(path: Path, label: str, declared: str) -> Decoding:
    """Check `path` as bytes and decide how to decode it, or raise a named RawFileError.

    `label` is the file's name in messages and rejected rows (e.g. 'ml-1m/users.dat'). A read asks
    for a file's decoding several times (reading it, `decoded_as`, `unterminated`): the scan of
    its bytes is kept per path, size and modification time, so an unchanged file is scanned once.
    A compressed file's text is its decompressed copy (`Decoding.source`); line numbers are its lines.
    """
    try:
        status = Path(path).stat()
    except OSError:  # missing or unreadable: the uncached check names it
        return _decoding_of(path, label, declared)
    version = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)
    decoding = _remembered_decoding(Path(path), label, declared, version)
    if not decoding.source.is_file():  # a decompressed copy deleted since (PAML_HOME cleaned): made again
        _remembered_decoding.cache_clear()
        decoding = _remembered_decoding(Path(path), label, declared, version)
    return decoding


@functools.lru_cache(maxsize=64)
def _remembered_decoding(path: Path, label: str, declared: str, version: tuple[int, ...]) -> Decoding:
    """`_decoding_of`, once per (path, label, encoding, the file's inode, size and times); errors are not kept."""
    return _decoding_of(path, label, declared)


def _decoding_of(path: Path, label: str, declared: str) -> Decoding:
    """`decoding_of` without the kept scans: every check runs on the text (`source`), every message names `path`."""
    from assets.compressed import decompressed  # that module raises this module's errors

    where = f"{label} ({path})"
    source = decompressed(Path(path), where)
    head = check_start(source, where, declared)
    bom = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    scan = scan_bytes(source, bom)
    if scan.size == 0:
        raise EmptyRawFileError(f"{where}: the file is empty; expected {declared} text with data rows.")
    if scan.nul_at is not None:
        raise RawEncodingError(nul_message(source, where, declared, scan.nul_at, scan.line_end))
    utf8_declared = normalize_encoding(declared) == "utf-8"
    if scan.utf8_error_at is not None and (utf8_declared or bom):
        raise RawEncodingError(utf8_message(source, where, declared, scan.utf8_error_at, scan.line_end, bool(bom)))
    if scan.utf8_error_at is not None and is_single_byte(declared) and mostly_utf8(scan):
        # Mostly UTF-8, with a few stray bytes: neither encoding reads it whole.
        line, byte = position(source, scan.utf8_error_at, scan.line_end)
        raise RawEncodingError(
            f"{where}: mixes encodings: {scan.utf8_chars:,} characters are UTF-8, but {scan.utf8_invalid:,} "
            f"byte(s) are not, the first at line {line}, byte {byte} ({describe_bytes(source, scan.utf8_error_at)}); "
            f"read as {declared} its UTF-8 text would turn into mojibake. Save the file in one encoding "
            "(fix the bytes named, or convert the whole file)."
        )
    # ISO-8859-1 decodes any byte, so a UTF-8 copy can only be recognised by being valid UTF-8.
    as_utf8 = utf8_declared or bool(bom) or (scan.non_ascii and scan.utf8_error_at is None and is_single_byte(declared))
    # ISO-8859-1 decodes any byte; other encodings (cp1252, shift_jis, ...) leave some bytes undefined.
    if not as_utf8 and scan.non_ascii and normalize_encoding(declared) != "iso8859-1" and (
            bad := decode_error_at(source, bom, declared)) is not None:
        line, byte = position(source, bad, scan.line_end)
        raise RawEncodingError(
            f"{where}: is not valid {declared} at line {line}, byte {byte} ({describe_bytes(source, bad)}); "
            f"expected {declared} text."
        )
    return Decoding(
        encoding="utf-8" if as_utf8 else declared, declared=declared, bom_bytes=bom,
        ends_with_newline=scan.last_byte in (b"\n", b"\r"), source=source, line_end=scan.line_end.decode(),
    )


def nul_message(source: Path, where: str, declared: str, offset: int, line_end: bytes) -> str:
    """What the read says of a NUL byte at `offset` of `source`."""
    line, byte = position(source, offset, line_end)
    return (f"{where}: NUL byte at line {line}, byte {byte}: not {declared} text "
            "(UTF-16 or UTF-32 without a byte-order mark, or a binary file).")


def utf8_message(source: Path, where: str, declared: str, offset: int, line_end: bytes, bom: bool) -> str:
    """What the read says of a byte that is not UTF-8 at `offset` of `source`, a file declared UTF-8 or
    starting with a UTF-8 byte-order mark: line, byte, the bytes and (declared UTF-8) what they read as
    in ISO-8859-1 and the spec key to set."""
    utf8_declared = normalize_encoding(declared) == "utf-8"
    line, byte = position(source, offset, line_end)
    what = "is not valid UTF-8" if utf8_declared else "starts with a UTF-8 byte-order mark but is not valid UTF-8"
    hint = single_byte_hint(source, offset) if utf8_declared and not bom else ""
    return (f"{where}: {what} at line {line}, byte {byte} ({describe_bytes(source, offset)}); "
            f"expected {'UTF-8' if utf8_declared else declared} text.{hint}")


PREFIX_BYTES = 1 << 20  # how much of each text file `dataset add` checks (`check_prefix`)


def check_prefix(path: Path, where: str, declared: str) -> None:
    """Raise the RawFileError the read raises (`decoding_of`) for an empty file, a NUL byte, or for bytes that
    are not UTF-8 in a file declared UTF-8 (or starting with a UTF-8 byte-order mark), when its first
    PREFIX_BYTES hold one; the message says that only that prefix was checked. For `dataset add`: a file in the wrong
    encoding is named when it is registered, reading no more than the prefix of a plain file of any size; the
    rest is checked when it is read. A compressed file's text is checked in its decompressed copy
    (assets/compressed.py), made whole here, once: the read then uses that copy.

    Only what the prefix decides for the whole file is checked: the read's choices from counts over all of
    it (a single-byte file that is valid UTF-8, or mostly UTF-8 with a few stray bytes) are left to it.
    """
    from assets.compressed import decompressed  # that module raises this module's errors

    source = decompressed(Path(path), where)
    head = check_start(source, where, declared)
    limit = PREFIX_BYTES
    with source.open("rb") as handle:
        prefix = handle.read(limit + 1)
    if not prefix:  # as the read says it (`decoding_of`): a pattern's empty day stopped the read, unseen at `dataset add`
        raise EmptyRawFileError(f"{where}: the file is empty; expected {declared} text with data rows.")
    cut = len(prefix) > limit
    prefix = prefix[:limit]
    bom = len(UTF8_BOM) if head.startswith(UTF8_BOM) else 0
    line_end = b"\r" if b"\r" in prefix and b"\n" not in prefix else b"\n"  # as `_Scan.line_end`, from the prefix
    size = f"{limit // 2**20} MiB" if limit % 2**20 == 0 else f"{limit:,} bytes"
    checked = f" (`dataset add` checks the first {size} of each text file; the read checks all of it)"
    if (nul := prefix.find(b"\x00", bom)) >= 0:
        raise RawEncodingError(nul_message(source, where, declared, nul, line_end) + checked)
    if normalize_encoding(declared) != "utf-8" and not bom:
        return
    text = prefix[bom:_utf8_cut(prefix) if cut else len(prefix)]  # a character the prefix ends inside is not an error
    if text.isascii() or is_utf8(text):
        return
    try:
        text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RawEncodingError(utf8_message(source, where, declared, bom + error.start, line_end, bool(bom)) + checked) from None


def decode_text(decoding: Decoding) -> str:
    """The whole file as text (BOM removed; a compressed file's decompressed text); the bytes were
    validated by `decoding_of`."""
    return decoding.source.read_bytes()[decoding.bom_bytes:].decode(decoding.encoding)
