"""Atomic claims on a study's trials: an exclusive, non-blocking ``flock`` on ``STUDY/.locks/<trial>.lock``, held by
whoever trains or evaluates the trial; and a blocking one (:func:`hold`) for a short read-modify-write of a shared file.

The operating system releases the lock when its holder exits for any reason, SIGKILL included, so a
claim can never go stale: a rerun claims an interrupted trial again and resumes it from its checkpoint,
while a trial whose holder is still alive is never run twice. (flock needs a file system that honours
it across the processes involved: local disks, and NFS v4 for a cluster sharing one study folder.)
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


def study_locks(study_dir: str | Path) -> Path:
    """The folder of a study's lock files."""
    return Path(study_dir) / ".locks"


@contextmanager
def claim(lock_dir: Path, name: str):
    """Yield True if this process now holds the trial, False if another live process does."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_claimed(lock_dir: Path, name: str) -> bool:
    """Whether a live process holds the trial now (a shared, non-blocking probe of its lock; nothing is written)."""
    path = Path(lock_dir) / f"{name}.lock"
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)          # closing the descriptor releases a lock this probe took
    return False


@contextmanager
def hold(lock_dir: Path, name: str):
    """Wait for, then hold, the exclusive lock ``name`` (a short critical section, e.g. updating a study-wide file
    that several processes write)."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
