"""Reads and writes the file system refuses: disk full, a quota, a file size limit, a read-only
mount, no permission, a file where a directory should be.

Each becomes one line that names the path and the cause and says what to do (docs/operations.md,
"When the file system fails"). The libraries report them in their own words: an OSError with an
errno, DuckDB's 'Could not write file "...": No space left on device', polars' and safetensors'
'(os error 28)', SQLite's 'database or disk is full'; `refused_errno` reads all of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

_ACCESS = "give this user access to it, or point PAML_HOME (PAML_DATA_DIR for raw files) at a place it may use"

# errno -> (cause, what to do): the machine's or the user's to fix, never a bug of ours.
REFUSALS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk full", "free space on its file system, then run again"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota, then run again"),
    errno.EFBIG: ("file too large", "the file system or the process's file size limit (ulimit -f) refuses it; "
                                    "raise the limit, then run again"),
    errno.EROFS: ("read-only file system", "remount it read-write, or point PAML_HOME at a writable directory"),
    errno.EACCES: ("permission denied", _ACCESS),
    errno.EPERM: ("operation not permitted", _ACCESS),
    errno.ENOTDIR: ("not a directory", "a file stands where a directory is needed; point PAML_HOME at a directory"),
    errno.EIO: ("I/O error", "check the disk and the space left on it, then run again"),
}
# Said after a refused write into the store: what a user most needs to know before running again.
STORE_KEPT = "what the store holds stays whole (an artifact is recorded complete or not at all)"

_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")  # polars' and safetensors' (Rust) wording
_QUOTED_FILE = re.compile(r'file "([^"]+)"', re.IGNORECASE)  # DuckDB's wording
_SQLITE_WORDS = {"database or disk is full": errno.ENOSPC, "disk I/O error": errno.EIO}  # SQLite names no file


class StorageError(OSError):
    """A read or write the file system refused, as one line: the cause, the path, what to do."""

    def __init__(self, code: int, path: str, note: str = ""):
        super().__init__(code, os.strerror(code), path)
        cause, advice = REFUSALS.get(code, (os.strerror(code).lower(), "fix it, then run again"))
        self.line = f"{cause}: {path} ({os.strerror(code)}); {advice}{'; ' + note if note else ''}"

    def __str__(self) -> str:
        return self.line


def refused_errno(error: BaseException) -> int | None:
    """The errno of a refusal in REFUSALS that `error` reports, in any library's words; else None."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno if error.errno in REFUSALS else None
    text = str(error)
    for words, code in _SQLITE_WORDS.items():
        if words in text:
            return code
    match = _OS_ERROR_CODE.search(text)
    if match and int(match[1]) in REFUSALS:
        return int(match[1])
    return next((code for code in REFUSALS if f": {os.strerror(code)}" in text), None)


def error_code(error: BaseException) -> int | None:
    """Any errno `error` reports (an OSError's, polars' and safetensors' '(os error N)'), refusal or not; else None."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno
    match = _OS_ERROR_CODE.search(str(error))
    return int(match[1]) if match else refused_errno(error)


# Refusals of a write: met while reading, they are about a temporary file, not the file being read.
WRITE_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def refused_path(error: BaseException, code: int, reading: Path) -> str:
    """What a refusal met while reading `reading` is about: the file the error names; else, for a full disk or a
    size limit (a write), a temporary file of the read; else `reading`."""
    if (named := named_path(error)) is not None:
        return named
    if code in WRITE_REFUSALS:
        import tempfile

        return f"a temporary file (in {tempfile.gettempdir()}, or TMPDIR) while reading {reading}"
    return str(reading)


def named_path(error: BaseException) -> str | None:
    """The file `error` names (an OSError's filename, DuckDB's 'file "..."'), or None."""
    if isinstance(error, OSError) and error.filename:
        return os.fsdecode(error.filename)
    match = _QUOTED_FILE.search(str(error))
    return match[1] if match else None


@contextlib.contextmanager
def _refusals(path_of: Callable[[BaseException, int], str], note: str = "") -> Iterator[None]:
    """Raise a refusal inside the block as a StorageError naming `path_of(error, errno)`; every other
    error passes unchanged."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:
        code = refused_errno(error)
        if code is None:
            raise
        raise StorageError(code, path_of(error, code), note) from error


def refused_writes(path: Path, note: str = STORE_KEPT) -> contextlib.AbstractContextManager[None]:
    """Raise a refused write inside the block as a StorageError naming the file (the error's own,
    else `path`: a failed write() names none); every other error passes unchanged."""
    return _refusals(lambda error, _code: named_path(error) or str(path), note)


def refused_reads(path: Path) -> contextlib.AbstractContextManager[None]:
    """Raise a read the file system refuses inside the block (an I/O error, no permission) as a StorageError
    naming the file (`refused_path`); every other error, a missing file too, passes unchanged."""
    return _refusals(lambda error, code: refused_path(error, code, path))


def ensure_directory(path: Path) -> Path:
    """`mkdir -p path`; a file in the way, or a refusal, is a StorageError naming the path at fault."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        note = "a file, not a directory" if blocker == path else f"a file, in the way of {path}"
        raise StorageError(errno.ENOTDIR, str(blocker), note) from None
    except OSError as error:
        code = refused_errno(error)
        if code is None:
            raise
        raise StorageError(code, named_path(error) or str(path), f"creating {path}") from error
    return path


def causes(error: BaseException) -> list[BaseException]:
    """`error` and every error behind it (raised from, or raised while handling), the first cause last. An
    error raised `from None` ends its chain, as in its traceback: code that caught a refusal and raised
    another error on purpose meant that error, not the refusal."""
    chain, seen, pending = [], set(), [error]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        chain.append(current)
        pending += [current.__cause__, None if current.__suppress_context__ else current.__context__]
    return chain


def storage_failure(error: BaseException, home: Path, dagster_home: Path | None = None) -> str | None:
    """The line for a refused read or write behind `error`, or None when there is none.

    A run that fills the disk fails more than once: our write, then Dagster recording the failure in
    its own (SQLite) storage, whose errors name no file. The line is for the first refusal: ours (a
    StorageError) when there is one, else the first that names its file, else the first (an errno
    before SQLite's vague "disk I/O error"), placed in Dagster's storage when SQLite failed, else
    under `home`.
    """
    chain = causes(error)
    ours = [e for e in chain if isinstance(e, StorageError)]
    if ours:
        return str(ours[-1])
    refusals = [(code, named_path(e)) for e in reversed(chain) if (code := refused_errno(e)) is not None]
    if not refusals:
        return None
    code, path = sorted(refusals, key=lambda r: (r[1] is None, r[0] == errno.EIO))[0]
    if path is None:
        sqlite = any("sqlite3" in f"{type(e).__module__} {e}" for e in chain)
        path = f"Dagster's storage in {dagster_home}" if sqlite and dagster_home else f"a file under {home}"
    return str(StorageError(code, path))
