"""`otdistill.safe_paths`: remote names that would leave their root are refused, named, before any I/O."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from otdistill.safe_paths import UnsafePathError, confined, safe_relative


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("//etc/passwd", "absolute"),
        ("../x", "'..' part"),
        ("a/../../x", "'..' part"),
        ("a/..", "'..' part"),
        ("./x", "'.' part"),
        ("a//b", "empty part"),
        ("a/", "empty part"),
        ("a\\..\\..\\x", "backslash"),
        ("C:\\Windows\\x", "backslash"),
        ("a\0b", "NUL"),
    ],
)
def test_rejected_names_raise_naming_root_and_name(tmp_path: Path, name: str, why: str) -> None:
    root = tmp_path / "root"
    with pytest.raises(UnsafePathError, match=why) as caught:
        confined(root, name)
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.root == str(root) and err.name == name
    assert str(root) in str(err) and repr(name) in str(err)
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the root
    with pytest.raises(UnsafePathError):
        safe_relative(name)


@pytest.mark.parametrize("name", ["config.json", "sub/dir/model.safetensors", "a..b", "..hidden", "x.."])
def test_plain_relative_names_stay_under_the_root(tmp_path: Path, name: str) -> None:
    path = confined(tmp_path / "not-yet", name)
    assert path == tmp_path / "not-yet" / name
    assert path.resolve().is_relative_to((tmp_path / "not-yet").resolve())
    assert safe_relative(name).as_posix() == name


def test_a_symlink_inside_the_root_that_points_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(UnsafePathError, match="outside"):
        confined(root, "link/file")
    inner = root / "inner"
    inner.mkdir()
    os.symlink(inner, root / "inner-link")  # a link that stays inside is fine
    assert confined(root, "inner-link/file") == root / "inner-link" / "file"


def test_a_symlinked_root_is_compared_resolved(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    assert confined(tmp_path / "alias", "x/y") == tmp_path / "alias" / "x" / "y"
