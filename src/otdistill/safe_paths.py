"""Local paths built from remote names (S3 keys, manifests, MLmodel files) that cannot leave their root.

A name that comes from a bucket, a checkpoint manifest, a registered model's MLmodel or a teacher-cache
manifest is written by whoever can write there, not by this run. Joined to a local directory as it is, an
absolute name replaces the directory, ``..`` climbs out of it, and ``a//b`` from an S3 key becomes
absolute once its prefix is cut off. Every such join goes through `confined`, which accepts only a plain
relative POSIX name whose resolved path stays under the resolved root (a symlink already inside the root
that points out is caught by the second check), and raises `UnsafePathError` before anything is read or
written. `safe_relative` is the first check alone, for names used as S3 keys.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


class UnsafePathError(ValueError):
    """A remote-supplied name would resolve outside the local directory it is meant to stay under."""

    def __init__(self, root: str | os.PathLike[str], name: str, why: str) -> None:
        self.root = str(root)
        self.name = name
        self.why = why
        super().__init__(f"refusing remote path {name!r} under {self.root}: {why}")


def _problem(name: str) -> str | None:
    """Why `name` is not a plain relative POSIX path of named parts (None when it is one)."""
    if not name:
        return "it is empty"
    if "\0" in name:
        return "it contains a NUL character"
    if "\\" in name:
        return "it contains a backslash"
    if name.startswith("/"):
        return "it is absolute"
    for part in name.split("/"):
        if part == "":
            return "it has an empty part (a leading, trailing or doubled '/')"
        if part in (".", ".."):
            return f"it has a {part!r} part"
    return None


def safe_relative(name: str, root: str | os.PathLike[str] = "") -> PurePosixPath:
    """`name` as a relative path, or `UnsafePathError` when it is empty, absolute or has an empty, ``.``,
    ``..``, backslash or NUL part (`root` only names the destination in the error)."""
    why = _problem(name)
    if why is not None:
        raise UnsafePathError(root, name, why)
    return PurePosixPath(name)


def confined(root: str | os.PathLike[str], name: str) -> Path:
    """``root / name`` for a remote-supplied `name`, checked to stay under `root` (see the module doc).

    Raises `UnsafePathError` naming the root and the name; the caller has then read and written nothing.
    The root need not exist yet.
    """
    relative = safe_relative(name, root)
    base = Path(root)
    path = base.joinpath(*relative.parts)
    resolved_root = base.resolve()
    if not path.resolve().is_relative_to(resolved_root):
        raise UnsafePathError(root, name, f"it resolves to {path.resolve()}, outside {resolved_root}")
    return path
