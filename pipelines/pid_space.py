"""Which process-id space a process id belongs to, so that a writer's pid is judged only where it means the
same process.

A staged artifact's owner and a run's process tag name a pid and its start time; another process that
finds them decides from them whether that writer is dead. That is sound only where both see the same pids:
the same kernel boot and the same pid namespace. The hostname alone does not tell: containers of one image
started with the same `--hostname`, or Kubernetes pods with `hostNetwork`, share a hostname but not their
pids, and each would judge the other's live writer dead. The kernel's boot id (differs between machines and
boots) and the pid namespace's inode (differs between containers on one kernel; the same for containers that
share the host's pids, whose pids are indeed comparable) together tell.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PID_NAMESPACE = Path("/proc/self/ns/pid")
SPACE_DIGITS = 12  # of a sha256: short in a file name; 48 bits, so two spaces sharing a home practically never collide


def pid_space() -> str:
    """This process's pid space: `SPACE_DIGITS` hex digits of the boot id and the pid namespace's inode, or
    '' where either cannot be read (no /proc, as on macOS; a kernel without pid namespaces), so that the
    pids this process records are never judged by another: the initial namespace's inode is the same
    number on every machine, and one boot holds many namespaces. Not cached: a forked child of a process that
    unshared its pids lives in another namespace (two small reads of /proc)."""
    try:
        boot = BOOT_ID.read_text().strip()
        namespace = os.stat(PID_NAMESPACE).st_ino
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}:{namespace}".encode()).hexdigest()[:SPACE_DIGITS] if boot else ""


def process_place() -> str:
    """Where this process's pids mean what they say: `host+space`, or `host` where the space is unknown. Run
    tags and staging names both carry it, so that a writer is judged only from its own pid space."""
    space = pid_space()
    return socket.gethostname() + (f"+{space}" if space else "")


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22), so that a reused pid
    is not taken for the process a run tag or a staging name recorded; None where it cannot be read (no such
    process, or no /proc: not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the fields after the name, which may hold spaces and ')'
