"""Tokenizer parity: the checkpoint's HF tokenizer against the tokenizers the devices run.

The reference is `tokenizers` reading tokenizer.json (what the exporter itself uses). The device
implementations are

* ExecuTorch's C++ tokenizers (`pytorch_tokenizers.CppHFTokenizer`, the HFTokenizer that the
  LLM runner under Android's LlmModule and iOS's TextRunner loads from tokenizer.json), and
* onnxruntime-genai's tokenizer (`onnxruntime_genai.Tokenizer`, loaded from the ONNX artifact
  folder: genai_config.json + tokenizer.json + tokenizer_config.json).

Core ML apps tokenize in Swift (swift-transformers), which cannot run here: `expected_ids` gives
the ids the reference produces, for the manifest's record that the app's self-test compares.

`check_tokenizers` encodes and decodes a corpus (exporter/data/tokenizer_corpus.json: ASCII,
whitespace runs, emoji, CJK, combining marks, RTL scripts, code, the special tokens) with each
and returns one message per (implementation, string) that differs. `check_special_ids` checks
that bos/eos ids agree across tokenizer_config.json, generation_config.json, config.json, the
manifest and each artifact's metadata.

Like with like (documented where each comparison is made):

* "encode" compares ids without the post-processor: `tokenizers` add_special_tokens=False, the
  C++ tokenizer's encode(text, bos=0, eos=0), GenAI with add_special_tokens=false. Special-token
  strings inside the text are matched by all three (none of them has a switch for that).
* "encode with special tokens" compares the post-processor: `tokenizers` add_special_tokens=True,
  the C++ encode(text, bos=1, eos=0) (the runner's num_bos=1; pytorch_tokenizers 1.5 runs the
  tokenizer.json post-processor when bos > 0 and adds nothing when there is none), GenAI with
  add_special_tokens=true (its default is false: an app must set the option, as the manifest's
  tokenizer.add_special_tokens says).
* Decoding is checked on the reference ids (so a decoder difference shows even when encoders
  differ) against the reference decode with skip_special_tokens=False, compared as UTF-8 bytes.
  The C++ side is decoded token by token and the pieces concatenated, as the runner prints them
  (a piece may end inside a UTF-8 character, so it is compared as bytes). GenAI is decoded whole,
  through its TokenizerStream, and whole with its default skip_special_tokens (compared with the
  reference's skip_special_tokens=True). GenAI's decoder for SentencePiece-style tokenizers
  (Gemma's) drops special tokens even with skip_special_tokens=false: when its whole and streamed
  decodes of the whole corpus equal the reference's skip_special_tokens=True decode, that is what
  they are compared with (logged). Nothing is normalised: a per-token decode that differs
  from the whole-sequence decode (e.g. a Metaspace decoder's leading space) is what the device
  shows, and is reported.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .native_output import native_output

log = logging.getLogger(__name__)

EXECUTORCH = "executorch (pytorch_tokenizers HFTokenizer)"
GENAI = "onnxruntime-genai"
SHOWN_CHARS = 60  # failure messages show repr(text) up to this many characters

# ---------------------------------------------------------------------------------------------
# Corpus


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _token_string(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string, an AddedToken dict, or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _added_tokens(tokenizer_json: Path) -> list[str]:
    return [t["content"] for t in _read_json(tokenizer_json).get("added_tokens") or []]


def special_token_strings(tokenizer_json: Path) -> dict[str, str | None]:
    """{"bos": ..., "eos": ...}: the token strings tokenizer_config.json (beside tokenizer.json)
    names, or None where it names none or there is no tokenizer_config.json."""
    config_path = Path(tokenizer_json).parent / "tokenizer_config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    config = config if isinstance(config, dict) else {}
    return {"bos": _token_string(config.get("bos_token")), "eos": _token_string(config.get("eos_token"))}


def load_corpus(tokenizer_json: Path) -> list[tuple[str, str]]:
    """(name, text) pairs of the built-in corpus with {bos}, {eos} and {special} expanded for
    this tokenizer. Texts whose placeholder names a token the tokenizer lacks are left out."""
    data = json.loads((resources.files("exporter") / "data" / "tokenizer_corpus.json").read_text(encoding="utf-8"))
    names = special_token_strings(Path(tokenizer_json))
    added = _added_tokens(Path(tokenizer_json))
    every = " ".join(f"{token}w{i}" for i, token in enumerate(added))
    out = []
    for entry in data["texts"]:
        text = entry["text"]
        if "{special}" in text:
            if not added:
                continue
            text = text.replace("{special}", every)
        unresolved = False
        for key, token in names.items():
            placeholder = "{" + key + "}"
            if placeholder in text:
                if token is None:
                    unresolved = True
                else:
                    text = text.replace(placeholder, token)
        if not unresolved:
            out.append((entry["name"], text))
    return out


def _items(tokenizer_json: Path, texts: Sequence[str] | None) -> list[tuple[str | None, str]]:
    return list(load_corpus(tokenizer_json)) if texts is None else [(None, t) for t in texts]


# ---------------------------------------------------------------------------------------------
# The reference: `tokenizers`


def _hf(tokenizer_json: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tokenizer_json))


def reference_ids(tokenizer_json: Path, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Ids from `tokenizers` (the HF reference)."""
    tok = _hf(tokenizer_json)
    return [tok.encode(t, add_special_tokens=add_special_tokens).ids for t in texts]


def reference_decode(tokenizer_json: Path, ids: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
    tok = _hf(tokenizer_json)
    return [tok.decode(list(i), skip_special_tokens=skip_special_tokens) for i in ids]


def expected_ids(tokenizer_json: Path, texts: Sequence[str] | None = None,
                 add_special_tokens: bool = True) -> list[dict[str, Any]]:
    """[{"text", "ids"}] from the reference, for the manifest's Core ML self-test record (the app
    encodes each text with swift-transformers and compares). add_special_tokens=True by default:
    apps encode prompts with the post-processor (the manifest's tokenizer.add_special_tokens)."""
    chosen = [t for _, t in _items(Path(tokenizer_json), texts)]
    return [{"text": t, "ids": ids}
            for t, ids in zip(chosen, reference_ids(tokenizer_json, chosen, add_special_tokens), strict=True)]


# ---------------------------------------------------------------------------------------------
# ExecuTorch: pytorch_tokenizers' C++ HFTokenizer


class TokenizerLoadError(RuntimeError):
    pass


def _executorch_tokenizer(tokenizer_json: Path):
    """Loaded from the tokenizer.json path, as the runner is given it (a folder would make the
    C++ tokenizer read tokenizer_config.json for its bos/eos; a file path makes it guess)."""
    with native_output() as log:  # the first import logs a line from C++ too
        import pytorch_tokenizers

        tok = pytorch_tokenizers.CppHFTokenizer()
        try:
            tok.load(str(tokenizer_json))
            error = None
        except RuntimeError as e:
            error = e
    if error is not None:
        errors = [line.strip() for line in log.text.splitlines() if line.startswith("E ")]
        raise TokenizerLoadError(f"{error}" + (f" ({'; '.join(errors)})" if errors else ""))
    return tok


def executorch_ids(tokenizer_json: Path, texts: Sequence[str], bos: int = 0) -> list[list[int]]:
    """encode(text, bos, eos=0) by the C++ tokenizer. bos > 0 applies tokenizer.json's
    post-processor (pytorch_tokenizers 1.5); the LLM runner encodes prompts with num_bos=1."""
    tok = _executorch_tokenizer(Path(tokenizer_json))
    with native_output():  # encode logs when a normalizer is configured
        return [list(tok.encode(t, bos, 0)) for t in texts]


def _piece(tok, token_id: int) -> bytes:
    # The binding returns the C++ std::string as `str`; a piece that ends inside a UTF-8
    # character fails that conversion, and the raw bytes ride on the UnicodeDecodeError.
    try:
        return tok.decode(token_id).encode("utf-8")
    except UnicodeDecodeError as e:
        return bytes(e.object)


def executorch_decode(tokenizer_json: Path, ids: Sequence[Sequence[int]]) -> list[bytes]:
    """Each id decoded alone and the pieces concatenated: what the runner prints."""
    tok = _executorch_tokenizer(Path(tokenizer_json))
    with native_output():
        return [b"".join(_piece(tok, int(i)) for i in seq) for seq in ids]


# ---------------------------------------------------------------------------------------------
# onnxruntime-genai


def write_genai_tokenizer_folder(tokenizer_json: Path, folder: Path, tokenizer_config: Path | None = None) -> Path:
    """A folder `onnxruntime_genai.Tokenizer` loads without a model: a minimal genai_config.json
    (GenAI requires model.context_length > 0) plus tokenizer.json and tokenizer_config.json (the
    one beside tokenizer.json unless given; `{}` if there is none: GenAI requires the file)."""
    import shutil

    tokenizer_json = Path(tokenizer_json)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    config = tokenizer_config or tokenizer_json.parent / "tokenizer_config.json"
    if config.is_file():
        shutil.copyfile(config, folder / "tokenizer_config.json")
    else:
        (folder / "tokenizer_config.json").write_text("{}\n")
    tok = _hf(tokenizer_json)
    names = special_token_strings(tokenizer_json)
    eos = tok.token_to_id(names["eos"]) if names["eos"] else None
    bos = tok.token_to_id(names["bos"]) if names["bos"] else None
    genai = {"model": {"type": "decoder", "context_length": 2048, "vocab_size": tok.get_vocab_size(),
                       "bos_token_id": bos if bos is not None else 0,
                       "eos_token_id": [eos if eos is not None else 0],
                       "pad_token_id": eos if eos is not None else 0}}
    (folder / "genai_config.json").write_text(json.dumps(genai, indent=2) + "\n")
    return folder


def _genai_tokenizer(folder: Path):
    import onnxruntime_genai as og

    try:
        return og.Tokenizer(str(folder))
    except Exception as e:  # GenAI raises RuntimeError (or its own types) on a bad folder
        raise TokenizerLoadError(str(e)) from None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def genai_ids(onnx_folder: Path, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Ids from onnxruntime-genai's tokenizer with add_special_tokens set explicitly."""
    tok = _genai_tokenizer(Path(onnx_folder))
    tok.update_options(add_special_tokens=_flag(add_special_tokens))
    return [[int(i) for i in tok.encode(t)] for t in texts]


def genai_decode(onnx_folder: Path, ids: Sequence[Sequence[int]], skip_special_tokens: bool | None = False,
                 stream: bool = False) -> list[str]:
    """Decoded by onnxruntime-genai: whole, or token by token through a TokenizerStream (which
    holds back partial UTF-8 characters). skip_special_tokens=None keeps GenAI's default (skip)."""
    import numpy as np

    tok = _genai_tokenizer(Path(onnx_folder))
    if skip_special_tokens is not None:
        tok.update_options(skip_special_tokens=_flag(skip_special_tokens))
    out = []
    for seq in ids:
        if stream:
            s = tok.create_stream()
            out.append("".join(s.decode(int(i)) for i in seq))
        else:
            out.append(tok.decode(np.asarray(seq, dtype=np.int32)))
    return out


# ---------------------------------------------------------------------------------------------
# Comparison


def _show(text: str) -> str:
    r = repr(text)
    return r if len(r) <= SHOWN_CHARS else r[: SHOWN_CHARS - 3] + "..."


def _label(name: str | None, text: str) -> str:
    return _show(text) + (f" ({name})" if name else "")


def _ids_diff(ref: list[int], got: list[int]) -> str | None:
    if ref == got:
        return None
    i = next((k for k, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), min(len(ref), len(got)))
    return (f"first difference at token {i}: reference {ref[i:i + 4]} vs {got[i:i + 4]} "
            f"({len(ref)} vs {len(got)} tokens)")


def _bytes_diff(ref: bytes, got: bytes) -> str | None:
    if ref == got:
        return None
    i = next((k for k, (a, b) in enumerate(zip(ref, got, strict=False)) if a != b), min(len(ref), len(got)))
    return f"first difference at byte {i}: reference {ref[i:i + 12]!r} vs {got[i:i + 12]!r}"


def _compare(impl: str, items: list[tuple[str | None, str]], aspects: list[tuple[str, list, list, Any]]) -> list[str]:
    """One message per differing text: the first differing aspect, and the names of the others."""
    failures = []
    for k, (name, text) in enumerate(items):
        found = []
        for aspect, ref, got, diff in aspects:
            detail = diff(ref[k], got[k])
            if detail:
                found.append((aspect, detail))
        if found:
            also = f" (also differs: {', '.join(a for a, _ in found[1:])})" if len(found) > 1 else ""
            failures.append(f"{impl}: {_label(name, text)}: {found[0][0]} differs, {found[0][1]}{also}")
    return failures


def _utf8(texts: list[str]) -> list[bytes]:
    return [t.encode("utf-8") for t in texts]


def check_tokenizers(tokenizer_json: Path, onnx_folder: Path | None = None, texts: Sequence[str] | None = None,
                     device_tokenizer_json: Path | None = None) -> list[str]:
    """Failures (empty: parity) of the device tokenizers against the reference on `texts`
    (default: the built-in corpus, placeholders expanded for this tokenizer).

    tokenizer_json: the checkpoint's tokenizer.json, read by `tokenizers` (the reference).
    onnx_folder: the ONNX artifact folder GenAI loads (its own tokenizer.json and
        tokenizer_config.json); None: a tokenizer-only GenAI folder is made from
        device_tokenizer_json in a temporary directory.
    device_tokenizer_json: the tokenizer.json the ExecuTorch runner is given (a bundle's copy);
        default tokenizer_json.

    Each message names the implementation, the string (repr, truncated; the corpus name in
    parentheses), the first differing aspect and its first differing position. A tokenizer that
    an implementation cannot load is one message for that implementation.
    """
    tokenizer_json = Path(tokenizer_json)
    device_json = Path(device_tokenizer_json or tokenizer_json)
    items = _items(tokenizer_json, texts)
    strings = [t for _, t in items]
    plain = reference_ids(tokenizer_json, strings, add_special_tokens=False)
    special = reference_ids(tokenizer_json, strings, add_special_tokens=True)
    decoded = reference_decode(tokenizer_json, plain, skip_special_tokens=False)
    decoded_skip = reference_decode(tokenizer_json, plain, skip_special_tokens=True)
    failures: list[str] = []

    try:
        aspects = [
            ("encode (bos=0)", plain, executorch_ids(device_json, strings, bos=0), _ids_diff),
            ("encode with bos=1 (the runner's num_bos=1; reference add_special_tokens=True)", special,
             executorch_ids(device_json, strings, bos=1), _ids_diff),
            ("per-token decode (as the runner prints)", _utf8(decoded), executorch_decode(device_json, plain),
             _bytes_diff),
        ]
        failures += _compare(EXECUTORCH, items, aspects)
    except TokenizerLoadError as e:
        failures.append(f"{EXECUTORCH}: cannot load {device_json}: {e}")

    with tempfile.TemporaryDirectory(prefix="genai-tokenizer-") as tmp:
        folder = Path(onnx_folder) if onnx_folder else write_genai_tokenizer_folder(device_json, Path(tmp))
        try:
            whole, streamed = genai_decode(folder, plain, False), genai_decode(folder, plain, False, stream=True)
            # onnxruntime-genai's decoder for SentencePiece-style tokenizers (Gemma's) drops every
            # special token whatever skip_special_tokens says; the app then shows the text without
            # them. Accepted only when the whole corpus decodes exactly as the reference does with
            # skip_special_tokens=True, whole and streamed.
            expected = decoded
            if whole != decoded and whole == decoded_skip and streamed == decoded_skip:
                log.info("%s drops special tokens when decoding this tokenizer (skip_special_tokens=false has no "
                         "effect): its decode is compared with the reference's skip_special_tokens=True", GENAI)
                expected = decoded_skip
            aspects = [
                ("encode (add_special_tokens=false)", plain, genai_ids(folder, strings, False), _ids_diff),
                ("encode (add_special_tokens=true)", special, genai_ids(folder, strings, True), _ids_diff),
                ("decode", _utf8(expected), _utf8(whole), _bytes_diff),
                ("stream decode", _utf8(expected), _utf8(streamed), _bytes_diff),
                ("decode with GenAI's default skip_special_tokens", _utf8(decoded_skip),
                 _utf8(genai_decode(folder, plain, None)), _bytes_diff),
            ]
            failures += _compare(GENAI, items, aspects)
        except TokenizerLoadError as e:
            failures.append(f"{GENAI}: cannot load the tokenizer in {folder}: {e}")
    return failures


# ---------------------------------------------------------------------------------------------
# bos/eos ids


def _id_list(value: Any) -> list[int] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    return [int(v) for v in values]


def read_artifact_metadata(path: Path) -> dict[str, Any]:
    """The metadata `check_special_ids` reads from an artifact on disk (its runtime's
    `read_metadata`: `format`, `bos_id`, `eos_ids` among others)."""
    from .runtimes import format_names, format_of, runtime

    fmt = format_of(Path(path))
    if fmt is None:
        raise ValueError(f"{path}: not an artifact of a known format ({', '.join(format_names())})")
    return runtime(fmt).read_metadata(Path(path))


def check_special_ids(folder: Path, manifest: Mapping[str, Any] | None = None,
                      artifact_metadata: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """Problems (empty: agreement) with bos/eos ids across the sources.

    folder: a checkpoint folder (or any folder) with tokenizer.json and optionally
        tokenizer_config.json, generation_config.json, config.json; missing files are skipped.
    manifest: the bundle's manifest.json as a dict (model.bos_token_id, model.eos_token_ids).
    artifact_metadata: {artifact name: metadata} as `read_artifact_metadata` (the runtimes'
        read_metadata) gives it: `format`, `bos_id` (None: none stated), `eos_ids`.

    The checkpoint's bos is taken as the exporter takes it (generation_config.json, then
    config.json, then tokenizer_config.json's token string looked up in tokenizer.json); every
    other bos must equal it. Generation stops at every eos any source names (generation_config's
    list, config.json's, the tokenizer's eos) and at the chat template's end-of-turn token (the
    manifest's chat.end_of_turn_token): with a manifest, each of those must be among its stop ids
    (model.eos_token_ids, and chat.stop_token_ids the same set), and every artifact's eos ids must
    equal that set; without one, every artifact's must equal the union of the sources. An
    artifact whose format always states a bos (GenAI: genai_config.json requires a value and the
    exporter writes the pad id there) is not checked for bos when the checkpoint has none.
    """
    folder = Path(folder)
    problems: list[str] = []

    def read(name: str) -> dict:
        path = folder / name
        if not path.is_file():
            return {}
        data = _read_json(path)
        return data if isinstance(data, dict) else {}

    generation, config, tok_config = read("generation_config.json"), read("config.json"), read("tokenizer_config.json")
    tokenizer = _hf(folder / "tokenizer.json") if (folder / "tokenizer.json").is_file() else None

    def token_ids(where: str, key: str, token: str | None) -> list[int] | None:
        if token is None:
            return None
        token_id = tokenizer.token_to_id(token) if tokenizer is not None else None
        if token_id is None:
            problems.append(f"{where}: {key} {token!r} is not a token of tokenizer.json")
            return None
        return [token_id]

    sources = {  # source name -> (bos ids, eos ids) as stated there (None: not stated)
        "generation_config.json": (_id_list(generation.get("bos_token_id")), _id_list(generation.get("eos_token_id"))),
        "config.json": (_id_list(config.get("bos_token_id")), _id_list(config.get("eos_token_id"))),
        "tokenizer_config.json": (token_ids("tokenizer_config.json", "bos_token", _token_string(tok_config.get("bos_token"))),
                                  token_ids("tokenizer_config.json", "eos_token", _token_string(tok_config.get("eos_token")))),
    }
    chat = (manifest or {}).get("chat") or {}
    end_of_turn = token_ids("manifest chat", "end_of_turn_token", chat.get("end_of_turn_token"))
    if end_of_turn is not None:
        sources["the chat template's end of turn"] = (None, end_of_turn)
    bos_source = next((s for s, (b, _) in sources.items() if b is not None), None)
    bos = sources[bos_source][0][0] if bos_source else None
    bos_from = bos_source or "the checkpoint"
    for source, (b, _) in sources.items():
        if b is not None and b[0] != bos:
            problems.append(f"bos: {source} says {b[0]}, {bos_from} says {bos}")

    stop = list(dict.fromkeys(i for _, e in sources.values() if e for i in e))
    stop_from = f"the stop ids of {', '.join(s for s, (_, e) in sources.items() if e) or 'the checkpoint'}"
    if manifest is not None:
        stated = list((manifest.get("model") or {}).get("eos_token_ids") or [])
        for source, (_, e) in sources.items():
            if e is not None and not set(e) <= set(stated):
                problems.append(f"eos: {source} says {e}, not among the manifest's stop ids {stated}")
        if chat and set(chat.get("stop_token_ids") or []) != set(stated):
            problems.append(f"eos: manifest chat.stop_token_ids {chat.get('stop_token_ids')} differs from "
                            f"model.eos_token_ids {stated}")
        stop, stop_from = stated, "the manifest's stop ids"

    from .runtimes import registration

    for name, meta in (artifact_metadata or {}).items():
        if not {"format", "bos_id", "eos_ids"} <= set(meta):
            problems.append(f"artifact {name}: metadata without format, bos_id and eos_ids (not read by a runtime)")
            continue
        where = f"artifact {name} ({meta['format']} metadata)"
        if not (registration(meta["format"]).bos_always_stated and bos is None) and meta["bos_id"] != bos:
            problems.append(f"bos: {where} says {meta['bos_id']}, {bos_from} says {bos}")
        if set(meta["eos_ids"]) != set(stop):
            problems.append(f"eos: {where} says {list(meta['eos_ids'])}, {stop_from} are {stop}")
    if manifest is not None:
        stated_bos = (manifest.get("model") or {}).get("bos_token_id")
        if stated_bos != bos:
            problems.append(f"bos: manifest model says {stated_bos}, {bos_from} says {bos}")
    return problems


# ---------------------------------------------------------------------------------------------
# Chat prompts: the ids each device tokenizer feeds for a rendered conversation


def check_chat_prompts(tokenizer_json: Path, chat: Mapping[str, Any], onnx_folder: Path | None = None,
                       device_tokenizer_json: Path | None = None) -> list[str]:
    """Problems (empty: agreement) with the ids each device tokenizer feeds for the manifest's chat
    vectors, encoded as the manifest tells apps to encode a chat prompt (add_special_tokens
    false, bos_added_by_runtime BOS ids), against the vectors' ids (apply_chat_template's: the
    rendered text without the post-processor). The vectors' ids are first checked against
    `tokenizers` on this tokenizer.json. A runtime that feeds one BOS more than the vector is named
    as the double-BOS bug; special tokens that a device tokenizer splits into pieces show as a
    difference at their position."""
    vectors = [v for v in chat.get("vectors", []) if "ids" in v]
    texts = [v["text"] for v in vectors]
    if not texts:
        return []
    device_json = Path(device_tokenizer_json or tokenizer_json)
    problems = []
    reference = reference_ids(Path(tokenizer_json), texts, add_special_tokens=False)
    bos_id = None
    tokenizer = _hf(Path(tokenizer_json))
    bos_token = _token_string(special_token_strings(Path(tokenizer_json)).get("bos"))
    if bos_token is not None:
        bos_id = tokenizer.token_to_id(bos_token)

    def compare(impl: str, got: list[list[int]]) -> None:
        for vector, ref, ids in zip(vectors, reference, got, strict=True):
            diff = _ids_diff(ref, ids)
            if diff is None:
                continue
            label = f"{vector['name']}{' + generation prompt' if vector['add_generation_prompt'] else ''}"
            if bos_id is not None and ids[:1] == [bos_id] and ids[1:] == ref:
                problems.append(f"{impl}: chat prompt {label!r}: double BOS, the runtime adds BOS {bos_id} "
                                "before a template that already wrote it")
            else:
                problems.append(f"{impl}: chat prompt {label!r}: {diff}")
            return  # one message per implementation

    for vector, ref in zip(vectors, reference, strict=True):
        if vector["ids"] != ref:
            problems.append(f"manifest chat vector {vector['name']!r}: ids differ from tokenizer.json's "
                            f"({_ids_diff(ref, vector['ids'])})")
            return problems
    num_bos, special = int(chat.get("bos_added_by_runtime", 0)), bool(chat.get("add_special_tokens", False))
    try:
        compare(EXECUTORCH, executorch_ids(device_json, texts, bos=num_bos))
    except TokenizerLoadError as e:
        problems.append(f"{EXECUTORCH}: cannot load {device_json}: {e}")
    with tempfile.TemporaryDirectory(prefix="genai-tokenizer-") as tmp:
        folder = Path(onnx_folder) if onnx_folder else write_genai_tokenizer_folder(device_json, Path(tmp))
        try:
            compare(GENAI, genai_ids(folder, texts, special))
        except TokenizerLoadError as e:
            problems.append(f"{GENAI}: cannot load the tokenizer in {folder}: {e}")
    return problems
