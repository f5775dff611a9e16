"""manifest.json: the bundle contract read by the apps, CI and `slm-export verify`.

The schema is exporter/schema/manifest.schema.json (documented in docs/MANIFEST.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any

from .checkpoint import sha256_file
from .errors import InputError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# OUT/<target>/extras/: files the export keeps for desktop use that no app loads (the manifest's
# `extras`); the bundling step leaves them out of every app.
EXTRAS_DIR = "extras"


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


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    return {"path": path.relative_to(root).as_posix(), "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def bundled_paths(root: Path) -> list[Path]:
    """The files an app receives: everything under `root` but manifest.json and extras/."""
    return [f for f in sorted(p for p in root.rglob("*") if p.is_file())
            if f.relative_to(root).parts[0] not in (MANIFEST, EXTRAS_DIR)]


def list_files(root: Path) -> list[dict[str, Any]]:
    return [file_entry(root, f) for f in bundled_paths(root)]


def validate(manifest: dict[str, Any]) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"manifest.json: {where}: {e.message}") from None


_SPECIAL = ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
            (stat.S_ISBLK, "block device"))


def containment_problems(bundle: Path) -> list[str]:
    """What makes `bundle` reach outside its folder, found without reading any file: a symbolic
    link whose target lies outside the bundle or does not exist, and special files (pipes, sockets,
    devices), each by its path in the bundle. Links that stay inside are allowed."""
    root = bundle.resolve()
    problems = []
    for folder, dirs, files in os.walk(bundle, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            rel = path.relative_to(bundle).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                target = Path(os.path.realpath(path))
                if target != root and root not in target.parents:
                    problems.append(f"{rel} is a symbolic link to {os.readlink(path)}, outside the bundle")
                elif not target.exists():
                    problems.append(f"{rel} is a symbolic link to {os.readlink(path)}, which does not exist")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                kind = next((label for test, label in _SPECIAL if test(mode)), "special file")
                problems.append(f"{rel} is a {kind}, not a regular file")
    return problems


def check_contained(bundle: Path) -> None:
    """Refuse a bundle that is not self-contained (containment_problems), naming the first entry."""
    problems = containment_problems(bundle)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(f"{bundle}: not a self-contained bundle: {problems[0]}{more}; nothing was read")


def read(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking that the bundle stays inside its folder."""
    path = bundle / MANIFEST
    if bundle.is_dir():
        check_contained(bundle)
    if not path.is_file():
        raise InputError(f"{path}: no manifest.json (is this an slm-export bundle?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    validate(manifest)
    return manifest


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the bundle's files against the manifest: changed, missing or extra files.
    Extras may be absent (an app's copy has none) but, when present, must be the exported ones."""
    problems = []
    listed = {f["path"]: f for f in manifest["files"]}
    extras = {f["path"]: f for f in manifest.get("extras", [])}
    for rel, entry in (listed | extras).items():
        path = bundle / rel
        if not path.is_file():
            if rel in listed:
                problems.append(f"{rel}: missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest (file changed)")
    for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = f.relative_to(bundle).as_posix()
        if rel != MANIFEST and rel not in listed and rel not in extras:
            problems.append(f"{rel}: not listed in the manifest")
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
