"""manifest.json: the bundle contract read by the apps, CI and `slm-export verify`.

The schema is exporter/schema/manifest.schema.json (documented in docs/MANIFEST.md).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from .checkpoint import sha256_file
from .errors import InputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def schema() -> dict[str, Any]:
    return json.loads((resources.files("exporter") / "schema" / "manifest.schema.json").read_text())


def artifact_digest(path: Path) -> tuple[int, str]:
    """(bytes, sha256) of a file, or of a folder artifact: sha256 over 'relpath sha256' lines."""
    if path.is_file():
        return path.stat().st_size, sha256_file(path)
    h, total = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        total += f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix()} {sha256_file(f)}\n".encode())
    return total, h.hexdigest()


def list_files(root: Path) -> list[dict[str, Any]]:
    return [{"path": f.relative_to(root).as_posix(), "bytes": f.stat().st_size, "sha256": sha256_file(f)}
            for f in sorted(p for p in root.rglob("*") if p.is_file()) if f.name != MANIFEST or f.parent != root]


def validate(manifest: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"manifest.json: {where}: {e.message}") from None


def read(bundle: Path) -> dict[str, Any]:
    path = bundle / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: no manifest.json (is this an slm-export bundle?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    validate(manifest)
    return manifest


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the bundle's files against the manifest: changed, missing or extra files."""
    problems = []
    listed = {f["path"]: f for f in manifest["files"]}
    for rel, entry in listed.items():
        path = bundle / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (file changed)")
    for f in list_files(bundle):
        if f["path"] not in listed:
            problems.append(f"{f['path']}: not listed in the manifest")
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        if path.exists() and artifact_digest(path)[1] != artifact["sha256"]:
            problems.append(f"{artifact['path']}: artifact sha256 differs from the manifest")
    return problems


def write(root: Path, manifest: dict[str, Any]) -> Path:
    validate(manifest)
    path = root / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
