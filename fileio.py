"""Files: writing them so that a reader never sees half of one (atomic_output, write_json), and telling a regular
file from one that must not be opened (is_special_file)."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: str | Path):
    """Yield a temporary path beside `path` to write; on success it replaces `path` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # same suffix: Keras checks it
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data) -> Path:
    """data as indented JSON at path, written atomically, its folder made if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return path


def is_special_file(path: str | Path) -> bool:
    """Whether something is at path that is not a regular file once links are followed: a FIFO (which blocks
    whoever opens it until a writer comes), a socket, a device or a folder. Found by stat, never by opening it.
    False for a regular file and for nothing at all (a missing file or broken link fails later, as unreadable)."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def file_digest(*paths: str | Path) -> str:
    """A short hash (SHA-256, 12 hex digits) of the files' bytes, in order: equal for equal files."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()[:12]
