"""One manifest schema for the Python writer and both demo apps: an app that reads a key the
schema does not define fails here (the apps themselves cannot be built on this machine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter import manifest as manifest_io

REPO = Path(__file__).resolve().parents[1]


def schema_keys(node=None) -> set[str]:
    node = manifest_io.schema() if node is None else node
    keys: set[str] = set()
    if isinstance(node, dict):
        keys |= set(node.get("properties", {}))
        for value in node.values():
            keys |= schema_keys(value)
    elif isinstance(node, list):
        for value in node:
            keys |= schema_keys(value)
    return keys


APPS = {
    # Kotlin: kotlinx.serialization names every manifest field with @SerialName("key").
    "android": ("android-demo/app/src/main", "*.kt", re.compile(r'@SerialName\("([^"]+)"\)')),
    # Swift: Codable CodingKeys spell every manifest key as a raw value: case x = "key".
    "ios": ("ios-demo", "Manifest*.swift", re.compile(r'case\s+\w+\s*=\s*"([^"]+)"')),
}


def keys_read_by(app: str) -> dict[str, set[str]]:
    folder, pattern, regex = APPS[app]
    found = {}
    for path in sorted((REPO / folder).rglob(pattern)):
        if "/Tests/" in path.as_posix() or "/test/" in path.as_posix():
            continue
        code = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines()
                         if not line.lstrip().startswith(("//", "*", "/*")))  # comments may quote examples
        keys = set(regex.findall(code))
        if keys:
            found[path.relative_to(REPO).as_posix()] = keys
    return found


@pytest.mark.parametrize("app", sorted(APPS))
def test_app_reads_only_keys_the_schema_defines(app):
    found = keys_read_by(app)
    assert found, f"no manifest keys found in the {app} app (did its manifest model move?)"
    allowed = schema_keys()
    unknown = {f"{path}: {key}" for path, keys in found.items() for key in keys - allowed}
    assert not unknown, f"the {app} app reads keys the manifest schema does not define: {sorted(unknown)}"
    read = set().union(*found.values())
    # The contract's essentials: the app must read what it needs to load and check a bundle.
    assert {"artifacts", "sha256", "path", "format", "self_test", "must_match", "expected_ids"} <= read


def test_the_schema_check_catches_an_unknown_key():
    allowed = schema_keys()
    assert "max_seq_len" in allowed and "eos_token_ids" in allowed
    assert "max_sequence_length" not in allowed


@pytest.mark.parametrize("fixture", sorted(str(p.relative_to(REPO)) for p in REPO.glob("*-demo/**/manifest.json")
                                           if "assets/slm" not in p.as_posix() and "Resources/slm" not in p.as_posix()))
def test_app_test_fixtures_are_valid_manifests(fixture):
    manifest_io.validate(json.loads((REPO / fixture).read_text()))


def closed_object_keys(node=None) -> set[str]:
    """Keys of the schema's closed objects (additionalProperties: false)."""
    node = manifest_io.schema() if node is None else node
    keys: set[str] = set()
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            keys |= set(node.get("properties", {}))
        for value in node.values():
            keys |= closed_object_keys(value)
    elif isinstance(node, list):
        for value in node:
            keys |= closed_object_keys(value)
    return keys


def test_android_app_declares_every_key_a_manifest_may_carry():
    """kotlinx.serialization refuses a key its data class does not declare (the Android parser is
    strict, like the schema): a key the exporter may write but the app lacks would make every new
    bundle unloadable on Android."""
    missing = closed_object_keys() - set().union(*keys_read_by("android").values())
    assert not missing, f"the Android app would refuse manifests carrying {sorted(missing)}"
