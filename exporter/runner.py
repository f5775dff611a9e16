"""What `slm-export run` opens: a bundle's artifact (or a bare artifact) with its tokenizer,
eos ids and context length, checked before any token is generated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .runtimes import REGISTRY, format_of, runtime


@dataclass
class RunTarget:
    artifact: Path
    format: str
    session: object
    tokenizer: object
    eos_ids: list[int]
    max_seq_len: int

    def encode(self, prompt: str) -> list[int]:
        if not prompt:
            raise InputError("--prompt is empty")
        ids = self.tokenizer.encode(prompt).ids
        if not ids:
            raise InputError("--prompt encodes to no tokens")
        if len(ids) >= self.max_seq_len:
            raise InputError(f"--prompt is {len(ids)} tokens; the artifact's context is {self.max_seq_len} "
                             "(prompt plus new tokens must fit)")
        return ids


def open_for_run(path: Path, fmt: str | None, tokenizer_path: Path | None) -> RunTarget:
    from .tokenizer import load_tokenizer

    if not path.exists():
        raise InputError(f"{path}: no such bundle or artifact")
    if path.is_dir() and (path / "manifest.json").is_file():
        from . import manifest as manifest_io

        manifest = manifest_io.read(path)
        artifacts = [a for a in manifest["artifacts"] if fmt is None or a["format"] == fmt]
        if not artifacts:
            raise InputError(f"{path}: the bundle has no {fmt} artifact "
                             f"(it has: {', '.join(a['format'] for a in manifest['artifacts'])})")
        entry = artifacts[0]
        artifact, chosen = path / entry["path"], entry["format"]
        tokenizer_file = path / manifest["tokenizer"]["path"]
        eos, max_seq_len = manifest["model"]["eos_token_ids"], manifest["model"]["max_seq_len"]
        module = runtime(chosen)
    else:
        chosen = fmt or format_of(path)
        if chosen not in REGISTRY:
            known = "; ".join(f"{r.format}: " + " or ".join([f"a {x} file" for x in r.suffixes]
                                                             + ([f"a folder with {r.folder_marker}"] if r.folder_marker else []))
                              for r in REGISTRY.values())
            raise InputError(f"{path}: not a bundle directory nor a known artifact ({known})")
        module = runtime(chosen)
        artifact = path
        candidates = [tokenizer_path] if tokenizer_path else [path / "tokenizer.json", path.parent / "tokenizer.json",
                                                             path.parent.parent / "tokenizer.json"]
        tokenizer_file = next((c for c in candidates if c and c.is_file()), None)
        if tokenizer_file is None:
            raise InputError(f"{path}: no tokenizer.json beside the artifact; pass --tokenizer")
        meta = module.read_metadata(artifact)
        eos, max_seq_len = meta.get("eos_ids", []), meta["max_seq_len"]
    try:
        tokenizer = load_tokenizer(tokenizer_file)
    except Exception as e:  # tokenizers' own parse error
        raise InputError(f"{tokenizer_file}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    return RunTarget(artifact, chosen, module.open_session(artifact), tokenizer, list(eos), max_seq_len)

