"""The student's training text, built offline from the running CPython.

Two sources, both English prose with embedded code:

* `pydoc_data.topics.topics`: the help() topics (language reference excerpts), sorted by name;
* docstrings (module, class, function) of the standard library's pure-Python modules, read with
  `ast` from the source files under `sysconfig.get_paths()["stdlib"]` in sorted path order. The
  files are parsed, never imported; tests, idlelib, tkinter, lib2to3, site-packages and other
  non-library folders are skipped.

Everything is deterministic for a given Python build. `split` holds out every `HELD_OUT_EVERY`-th
document (by index in that fixed order) for evaluation.
"""

from __future__ import annotations

import ast
import inspect
import sysconfig
import warnings
from pathlib import Path

HELD_OUT_EVERY = 20
MIN_DOC_CHARS = 40  # shorter docstrings ("Return self.") add little but noise

SKIP_DIRS = {
    "test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages", "dist-packages",
    "__pycache__", "ensurepip", "venv", "idle_test", "config-3.11-x86_64-linux-gnu",
}
SKIP_FILES = {"this.py", "antigravity.py", "__phello__.foo.py"}


def stdlib_files(stdlib: Path | None = None) -> list[Path]:
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS or part.startswith(("test_", "config-")) for part in rel.parts[:-1]):
            continue
        if rel.name in SKIP_FILES or rel.name.startswith("test_"):
            continue
        files.append(path)
    return files


def _docstrings(source: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old sources
        tree = ast.parse(source)
    docs = []
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef))]
    for node in nodes:
        doc = ast.get_docstring(node, clean=False)
        if doc:
            doc = inspect.cleandoc(doc).strip()
            if len(doc) >= MIN_DOC_CHARS:
                docs.append(doc)
    return docs


def docstring_documents(stdlib: Path | None = None) -> list[str]:
    """One document per source file: its docstrings joined by blank lines."""
    documents = []
    for path in stdlib_files(stdlib):
        try:
            source = path.read_text(encoding="utf-8")
            docs = _docstrings(source)
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        if docs:
            documents.append("\n\n".join(docs))
    return documents


def topic_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name].strip() for name in sorted(topics) if topics[name].strip()]


def documents() -> list[str]:
    """All documents in their fixed order: help topics, then docstrings by file path."""
    return topic_documents() + docstring_documents()


def split(docs: list[str], every: int = HELD_OUT_EVERY) -> tuple[list[str], list[str]]:
    """(train, held_out): document i is held out when i % every == every - 1."""
    train = [d for i, d in enumerate(docs) if i % every != every - 1]
    held = [d for i, d in enumerate(docs) if i % every == every - 1]
    return train, held


def train_and_held_out(max_docs: int | None = None) -> tuple[list[str], list[str]]:
    docs = documents()
    if max_docs is not None:
        docs = docs[:max_docs]
    return split(docs)
