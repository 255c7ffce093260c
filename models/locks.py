"""An exclusive lock on a file, between processes (flock): the kernel drops it when its holder
dies, so a killed process never leaves a lock behind. Without fcntl (not on Unix) nothing is
locked: runs that share a file must then be started one at a time. The holder writes its PID and
program into the file, so a process refused the lock can say who holds it (`lock_holder`)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Unix
    fcntl = None


def holder_line() -> str:
    """'<program> (PID n)' of this process: what a lock's file says about its holder. For messages only:
    the kernel decides who holds the lock, never this PID (in another container sharing the home it may
    name no process, or another one, here)."""
    program = " ".join([Path(sys.executable).name, *sys.argv[:2]]) if sys.argv and sys.argv[0] else Path(sys.executable).name
    return f"{program} (PID {os.getpid()})"


def lock_holder(path: Path) -> str:
    """Who holds the lock on `path`, as its holder wrote it, or 'another process' when it wrote nothing yet."""
    try:
        return Path(path).read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` (created when missing); yields False when not blocking and taken."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        if fcntl is None:
            yield True
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            # Who holds it is for messages only: a full disk or a file size limit must not fail the lock. Written
            # past the file object's buffer, so that closing it has nothing left to write (and to fail on).
            with contextlib.suppress(OSError):
                os.ftruncate(handle.fileno(), 0)
                os.write(handle.fileno(), holder_line().encode())
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
