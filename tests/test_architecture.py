"""The runtimes own every per-format fact (docs/ARCHITECTURE.md, "Where to add things"): code
outside exporter/runtimes/ asks the registry and never compares a format name."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from exporter.runtimes import REGISTRY, format_names

PACKAGE = Path(__file__).resolve().parents[1] / "exporter"
# bench/ compares ours with each format's own peer tool (export_llama, the GenAI model builder):
# facts about other projects, named per format on purpose; it is not part of the pipeline.
EXEMPT = ("runtimes", "bench")


def _format_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants equal to a format name used as a compared value, a dict key, or an
    element of a tuple/list/set (a table of formats)."""
    names = set(format_names())
    found = []
    for node in ast.walk(tree):
        values: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            values += [e for v in values if isinstance(v, ast.Tuple | ast.List | ast.Set) for e in v.elts]
        elif isinstance(node, ast.Dict):
            values = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            values = list(node.elts)
        found += [(v.lineno, v.value) for v in values if isinstance(v, ast.Constant) and v.value in names]
    return found


def test_no_format_name_is_compared_outside_the_runtimes():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in EXEMPT:
            continue
        offenders += [f"exporter/{rel.as_posix()}:{line}: {value!r}"
                      for line, value in _format_literals(ast.parse(path.read_text(encoding="utf-8")))]
    assert offenders == [], "per-format facts belong in exporter/runtimes/ (ask the registry):\n" + "\n".join(offenders)


def test_the_check_itself_finds_a_planted_comparison():
    planted = ast.parse('if a["format"] == "onnx":\n    pass\nTABLE = {".pte": "executorch"}\nX = ("coreml",)\n')
    assert [v for _, v in _format_literals(planted)] == ["onnx", "coreml"]
    assert len(_format_literals(ast.parse('TABLE = {"executorch": 1}'))) == 1


def test_manifest_schema_enum_is_the_registry():
    schema = json.loads((PACKAGE / "schema" / "manifest.schema.json").read_text())
    enums = []

    def walk(node):
        if isinstance(node, dict):
            if "format" in node and isinstance(node["format"], dict) and "enum" in node["format"]:
                enums.append(node["format"]["enum"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    assert enums and all(e == list(format_names()) for e in enums)


def test_every_registered_runtime_implements_the_contract():
    from exporter.runtimes import runtime

    for fmt, reg in REGISTRY.items():
        module = runtime(fmt)
        assert module.FORMAT == fmt
        for name in ("artifact_metadata", "emit", "open_session", "read_metadata", "special_ids"):
            assert callable(getattr(module, name, None)), f"{reg.module} lacks {name}"
        assert isinstance(module.TOKENIZER_IN_ARTIFACT, bool) and isinstance(module.EXTRA_FILES, dict)


def test_every_package_is_in_the_wheel():
    """pyproject lists the packages explicitly: a new subpackage missing there works from a checkout
    and fails for every `pip install .` user (it happened with coreml_interp/ops)."""
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found - {"exporter.targets"} <= listed, sorted(found - listed)
