"""Who staged an artifact directory, and whether that writer is dead.

A writer stages an artifact in `.<digest>.<owner>.<hex>` beside its target and renames it into place
when whole; writers of the same artifact stage side by side without a lock. The owner part,
`<pid>-<start>@<host>+<space>`, lets the next writer remove a killed writer's staging at once instead of
a day later: in the same pid space (`pipelines.pid_space`: the same boot and pid namespace, not merely
the same hostname), a process id that is gone, or that now belongs to a process started at another time
(the id reused), is a dead writer. Staging of another pid space (another host or container sharing the
home), or named without one (by older code, or where /proc is missing) cannot be judged from here and is
left to the age rule (`remove_stale_staging`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

from pipelines.pid_space import pid_space, process_place, process_start

# A staging directory whose owner cannot be judged (another pid space, a name without one) untouched this
# long is a killed writer's: a live one writes into it within seconds.
STALE_STAGING_SECONDS = 24 * 3600.0
# The space is optional: names staged before it was added, or where it is unknown, carry none.
_OWNER = re.compile(r"(?P<pid>\d+)-(?P<start>\d+)@(?P<host>[^/+]+)(?:\+(?P<space>[0-9a-f]+))?")


def owner_tag() -> str:
    """This process as a staging name's owner: `<pid>-<start>@<host>+<space>`, or `<pid>-<start>@<host>` where
    its pid space is unknown (not cached: a forked child is another owner)."""
    return f"{os.getpid()}-{process_start(os.getpid()) or 0}@{process_place()}"  # 0: no /proc, never judged


def staging_path(target: Path) -> Path:
    """A staging directory for `target` owned by this process: `.<name>.<owner>.<hex>` beside it."""
    return target.with_name(f".{target.name}.{owner_tag()}.{uuid.uuid4().hex}")


def owner_dead(name: str) -> bool:
    """True when the staging name `name` carries an owner in this pid space (`pid_space`) that is provably
    gone: its process id is free, or taken by a process started at another time. False for a live owner,
    another space's (another host, or a container with the same hostname), or a name without an owner or
    without a space (written by older code, or where the space is unknown)."""
    # `.<target>.<owner>.<hex>`: the target (a digest) holds no dot, the host may
    middle = name[1:].split(".", 1)[-1].rpartition(".")[0]
    match = _OWNER.fullmatch(middle)
    here = pid_space()
    if match is None or not here or match["space"] != here or match["host"] != socket.gethostname():
        return False
    pid, start = int(match["pid"]), int(match["start"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    now = process_start(pid)
    return bool(start and now and now != start)


def remove_stale_staging(directory: Path, older_than: float = STALE_STAGING_SECONDS) -> list[Path]:
    """Remove the staging directories (`.<name>.<...>`) in `directory` that no live writer can be filling: a
    dead owner's in this pid space (`owner_dead`) at once, a set-aside damaged copy (`.<name>.broken.<hex>`, only
    ever being removed) at once, any other not modified for `older_than` seconds. A killed writer leaves its
    staged artifact behind, never read but as large as the artifact."""
    removed = []
    now = time.time()
    for staging in directory.glob(".*.*") if directory.is_dir() else ():
        try:
            if not staging.is_dir():
                continue
            stale = (owner_dead(staging.name) or ".broken." in staging.name
                     or now - staging.stat().st_mtime > older_than)
        except FileNotFoundError:
            continue
        if stale:
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed
