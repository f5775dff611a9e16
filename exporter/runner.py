"""What `slm-export run` opens: a bundle's artifact (or a bare artifact) with its tokenizer,
stop ids, context length and chat format, checked before any token is generated; and the chat
conversation `run --chat` keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    chat: dict[str, Any] | None = None  # the manifest's chat section (None: a base model)

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


def _encoder_task(path: Path, fmt: str | None) -> str | None:
    """The task of an encoder artifact at `path`, read from its own metadata (None: not one)."""
    from .runtimes import encoder_runtime

    known = fmt or format_of(path)
    if known is None and path.suffix == ".ort":  # a decoder's ONNX artifact is its GenAI folder, never a .ort file
        known = "onnx"
    for name in [known] if known else []:
        try:
            return encoder_runtime(name).read_encoder_metadata(path)["task"]
        except Exception:  # each runtime's own load error: not this format's encoder
            continue
    return None


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
        chat = manifest.get("chat")
        module = runtime(chosen)
    else:
        task = _encoder_task(path, fmt)
        if task is not None:
            raise InputError(f"{path}: an encoder artifact ({task}), not a text generator: run the bundle folder it "
                             "belongs to with --text")
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
        chat = _chat_beside(tokenizer_file, eos)
    try:
        tokenizer = load_tokenizer(tokenizer_file)
    except Exception as e:  # tokenizers' own parse error
        raise InputError(f"{tokenizer_file}: cannot load tokenizer ({str(e).splitlines()[0]})") from None
    return RunTarget(artifact, chosen, module.open_session(artifact), tokenizer, list(eos), max_seq_len, chat)


def _chat_beside(tokenizer_file: Path, eos: list[int]) -> dict[str, Any] | None:
    """The chat section for a bare artifact, from the template files beside its tokenizer.json."""
    import json

    from .chat import load_chat_spec, read_chat_template

    folder = tokenizer_file.parent
    if read_chat_template(folder)[0] is None:
        return None
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    spec = load_chat_spec(folder, tokenizer_file, config if isinstance(config, dict) else {}, eos, {})
    return spec.to_manifest() if spec else None


@dataclass
class Conversation:
    """A multi-turn chat rendered with the bundle's template (in the sandbox), as the apps keep
    it: the system prompt, then turns; the oldest turns are dropped when prompt plus reply would
    not fit the context."""

    chat: dict[str, Any]
    tokenizer: object
    max_seq_len: int
    system: str | None = None
    turns: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self):
        from .chat import compile_template

        self._render = compile_template(self.chat["template"], "the bundle's chat template")

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def prompt_ids(self, reserve: int) -> tuple[list[int], int]:
        """The ids of the conversation with a generation prompt, and how many earlier messages
        were dropped so that they leave `reserve` positions for the reply."""
        import jinja2

        from .chat import chat_prompt_ids

        dropped = 0
        while True:
            try:
                text = self._render(self.messages(), True, **self.chat.get("template_variables", {}))
            except jinja2.TemplateError as e:
                raise InputError(f"the chat template refuses this conversation: {e}") from None
            ids = chat_prompt_ids(self.tokenizer, text)
            if len(ids) + reserve <= self.max_seq_len or len(self.turns) <= 1:
                break
            # drop the oldest user turn with its reply
            cut = next((i for i in range(1, len(self.turns)) if self.turns[i]["role"] == "user"), len(self.turns) - 1)
            del self.turns[:cut]
            dropped += cut
        if len(ids) >= self.max_seq_len:
            raise InputError(f"the chat prompt is {len(ids)} tokens; the artifact's context is {self.max_seq_len}")
        return ids, dropped

