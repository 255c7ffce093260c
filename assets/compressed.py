"""Compressed raw files (gzip, bzip2, xz, a zip archive of one file) read as the text they hold.

Public datasets ship compressed (Amazon's `reviews.json.gz`, a `ratings.dat.gz` kept to save disk).
Such a file is decompressed once, into `$PAML_HOME/decompressed/<SHA-256 of the compressed bytes>/`,
and read from there by the same code that reads any text file. The copy is written under a
`.partial` name and renamed when whole, so a run killed midway leaves no half-written copy (the
next run decompresses again, and removes the killed one's `.partial` once it is an hour old); the same compressed bytes always map to the same copy, so an
unchanged file is decompressed once whoever reads it, and a changed one gets a copy of its own,
which replaces the copy of its old bytes.
Messages, rejected rows and lineage name the compressed file; its line numbers are lines of the
decompressed text. The directory may be deleted at any time: it is only a cache.

A file is recognised by its first bytes, not its name: a `.gz` a browser already decompressed
is read as the text it is. zstd (no module in Python's standard library) and a zip archive of
several files are refused, saying what to do.
"""

from __future__ import annotations

import bz2
import functools
import glob
import gzip
import hashlib
import lzma
import os
import shutil
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from assets.bundle import file_digest

COPY_CHUNK_BYTES = 1 << 16  # small enough that a corrupt stream's error says roughly where it broke
CACHE_DIR_NAME = "decompressed"  # under PAML_HOME
HEAD_BYTES = 10  # enough for every magic below
# A text line cannot start like these: each holds a byte no text has, or (bzip2) a block marker after 'BZh<level>'.
BZIP2_BLOCK = b"1AY&SY"  # the first block's magic (pi); an empty stream has the end marker instead
BZIP2_END = b"\x17rE8P\x90"
# Suffixes a compressed copy of a raw file may carry (users.dat.gz): the ones read, then the ones refused.
READABLE_SUFFIXES = (".gz", ".bz2", ".xz", ".zip")
PACKED_SUFFIXES = (*READABLE_SUFFIXES, ".zst")
# The errors the standard library's decompressors raise on a corrupt or cut-off stream.
CORRUPT_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


@dataclass(frozen=True)
class Compression:
    """A compression the reader undoes: its name and how to open a file of it as a byte stream."""

    name: str
    open: Callable[[Path], IO[bytes]]


def _zip_member(path: Path) -> IO[bytes]:
    """The one file in a zip archive (`compression_of` has checked there is exactly one)."""
    archive = zipfile.ZipFile(path)
    return archive.open(zip_files(archive)[0])


GZIP = Compression("gzip", lambda p: gzip.open(p, "rb"))
BZIP2 = Compression("bzip2", lambda p: bz2.open(p, "rb"))
XZ = Compression("xz", lambda p: lzma.open(p, "rb"))
ZIP = Compression("zip", _zip_member)


def zip_files(archive: zipfile.ZipFile) -> list[str]:
    """The names of an archive's files (directories and macOS' __MACOSX/ resource forks left out)."""
    return [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]


def compression_of(head: bytes) -> Compression | None:
    """The compression a file starting with `head` is written in, or None for any other file."""
    if head.startswith(b"\x1f\x8b"):
        return GZIP
    if head.startswith(b"\xfd7zXZ\x00"):
        return XZ
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] in (BZIP2_BLOCK, BZIP2_END):
        return BZIP2
    if head.startswith(b"PK\x03\x04"):
        return ZIP
    return None


_home: list[Path | None] = [None]  # the `paml` resource's home while a Dagster step runs


def keep_copies_in(home: Path | None) -> None:
    """Write decompressed copies under `home`/decompressed (None: under PAML_HOME, as the CLI resolves it).
    The `paml` resource sets its configured home for its steps, which need not be PAML_HOME."""
    _home[0] = None if home is None else Path(home)


def cache_root() -> Path:
    """`keep_copies_in`'s home, else PAML_HOME (as pipelines/resources.py resolves it), + /decompressed."""
    home = _home[0] or os.environ.get("PAML_HOME", Path(__file__).resolve().parent.parent / ".paml")
    return Path(home).resolve() / CACHE_DIR_NAME


def text_name(path: Path) -> str:
    """The decompressed copy's file name: `path`'s without its compression suffix ('ratings.csv.gz' -> 'ratings.csv')."""
    return path.stem if path.suffix.lower() in READABLE_SUFFIXES else path.name


def decompressed(path: Path, where: str) -> Path:
    """`path` itself when it is not compressed, else its decompressed copy (written on first use).

    Raises a RawFileError naming `where` for a file that cannot be opened, a zip archive that does
    not hold exactly one file, and a stream that is corrupt or cut off (with how much text it gave).
    """
    from assets.raw_text import RawEncodingError, RawFileError

    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
        status = path.stat()
    except OSError as error:  # permission denied, a directory, a broken network mount
        raise RawFileError(f"{where}: cannot be read: {error.strerror or error}.") from None
    compression = compression_of(head)
    if compression is None:
        return path
    if compression is ZIP:
        try:
            with zipfile.ZipFile(path) as archive:
                names = zip_files(archive)
        except CORRUPT_ERRORS as error:
            raise RawFileError(f"{where}: a zip archive that cannot be read ({error}): a corrupt or cut-off "
                               "download? Fetch it again, or unzip it and point the reader at the text file.") from None
        if len(names) != 1:
            shown = ", ".join(names[:5]) + (f", ... ({len(names)} files)" if len(names) > 5 else "")
            raise RawEncodingError(f"{where}: a zip archive of {len(names)} files ({shown or 'none'}), not one text file; "
                                   "unzip it and point the reader at the text file.")
    digest = _content_digest(path, (status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns))
    target = cache_root() / digest / text_name(path)
    if not target.is_file():
        _write_copy(path, target, compression, where)
        drop_replaced_copies(path, target.parent)
    else:
        try:
            os.utime(target)  # in use: `drop_replaced_copies` leaves a copy used within the hour alone
        except OSError:
            pass
    check_once_compressed(target, compression, where)
    return target


def check_once_compressed(copy: Path, compression: Compression, where: str) -> None:
    """A RawEncodingError naming `where` when the decompressed `copy` is compressed again (a zip of a .gz, a .gz
    of a .gz): the text check would call the zip 'a gzip-compressed file', which it is not."""
    from assets.raw_text import ARCHIVE_MAGIC, RawEncodingError

    with copy.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    inner = next(((what, undo) for magic, what, undo in ARCHIVE_MAGIC if head.startswith(magic)), None)
    if inner is None and (inner_compression := compression_of(head)) is not None:
        inner = (f"{inner_compression.name}-compressed file", f"decompress it ({inner_compression.name})")
    if inner is not None:
        what, undo = inner
        raise RawEncodingError(f"{where}: {'a zip archive' if compression is ZIP else f'a {compression.name}-compressed file'} "
                               f"holding a {what} (compressed twice); decompress the outer layer, then the inner one "
                               f"({undo}), and point the reader at the text file.")


SOURCE_NOTE = ".source"  # in a copy's directory: the compressed file it was written from


IN_USE_SECONDS = 3600  # a copy written or read more recently than this is never removed by another's clean-up


def drop_replaced_copies(path: Path, kept: Path, now: float | None = None) -> None:
    """Note that `kept` (a copy's directory) holds `path`'s text, and remove the copies other bytes
    of `path` left (a log re-downloaded every day would otherwise leave a copy a day, for good), unless
    written or read within the last hour: a process still reading the old bytes (or still writing
    their copy while the new one appeared) keeps its copy. Another file with those old bytes
    decompresses them again when it is read."""
    source = str(path.resolve())
    try:
        (kept / SOURCE_NOTE).write_text(source)
    except OSError:
        return  # the copy is whole and read; only the clean-up is skipped
    now = time.time() if now is None else now
    for note in kept.parent.glob(f"*/{SOURCE_NOTE}"):
        try:
            if note.parent == kept or note.read_text() != source:
                continue
            used = max((f.stat().st_mtime for f in note.parent.iterdir() if f.name != SOURCE_NOTE), default=0.0)
            if now - used > IN_USE_SECONDS:
                shutil.rmtree(note.parent, ignore_errors=True)
        except OSError:  # removed meanwhile by another process
            continue


@functools.lru_cache(maxsize=256)
def _content_digest(path: Path, version: tuple[int, ...]) -> str:
    """SHA-256 of the file's bytes, once per (path, inode, size and times): a read asks several times."""
    digest = hashlib.sha256()
    file_digest(path, digest)
    return digest.hexdigest()


_written = {"files": 0, "bytes": 0}  # copies this process wrote (`copies_written`)


def copies_written() -> dict[str, int]:
    """How many decompressed copies this process wrote, and their bytes (the raw_logs step logs what a read
    added): a file read again from its copy adds nothing."""
    return dict(_written)


def _write_copy(path: Path, target: Path, compression: Compression, where: str) -> None:
    """Decompress `path` to `target`: written under a .partial name of its own, renamed when whole
    (two runs writing the same copy at once each rename whole, equal bytes)."""
    from assets.raw_text import RawFileError

    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f"{glob.escape(target.name)}.*.partial"):  # a killed writer's, as large as the text
        try:
            if time.time() - stale.stat().st_mtime > IN_USE_SECONDS:  # a live writer's grows all the time
                stale.unlink(missing_ok=True)
        except OSError:  # removed meanwhile by another process
            continue
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    written = 0
    try:
        with compression.open(path) as source, partial.open("wb") as sink:
            while chunk := source.read(COPY_CHUNK_BYTES):
                sink.write(chunk)
                written += len(chunk)
        os.replace(partial, target)
        _written["files"] += 1
        _written["bytes"] += written
    except CORRUPT_ERRORS as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None:  # the disk, not the stream (ENOSPC, EACCES)
            raise RawFileError(f"{where}: cannot be decompressed to {target.parent}: {error.strerror or error} "
                               f"(PAML_HOME holds the decompressed copies; free space there or point PAML_HOME "
                               "elsewhere).") from None
        after = f" (after {written:,} bytes of text)" if written else ""
        raise RawFileError(f"{where}: a {compression.name}-compressed file that cannot be decompressed: "
                           f"{error or type(error).__name__}{after}: a corrupt or cut-off download? Fetch it again.") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def packed_copy(path: Path, suffixes: tuple[str, ...] = PACKED_SUFFIXES) -> Path | None:
    """A compressed copy of a missing raw file beside its place (`users.dat.gz` for `users.dat`), or None."""
    if not path.name:  # the root directory ('/', a spec's file = "/"): no name to add a suffix to (ValueError)
        return None
    for suffix in suffixes:
        candidate = path.with_name(path.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def present(path: Path) -> Path | None:
    """The raw file at `path`, else a compressed copy of it the reader reads (`READABLE_SUFFIXES`), else None."""
    return path if path.is_file() else packed_copy(path, READABLE_SUFFIXES)
