"""Stage 1, load: a Hugging Face-layout directory -> `Checkpoint`.

Reads config.json, model.safetensors (or shards with model.safetensors.index.json),
tokenizer.json and, when present, tokenizer_config.json and generation_config.json. Weights are
read tensor by tensor when `build_model` copies them into the module (_TensorFiles). Pickle
weights are refused: loading them executes code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .chat import TEMPLATE_FILES, ChatSpec, load_chat_spec
from .errors import InputError
from .models import (
    REFUSED_ENCODERS,
    ConfigError,
    Decoder,
    DecoderSpec,
    Encoder,
    EncoderSpec,
    Family,
    HFConfig,
    build,
    family_of,
    supported_model_types,
)
from .models.encoder import Pooling, Projection
from .models.family import SpecTransform, split_rows

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


class CheckpointError(InputError):
    """The checkpoint directory cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class TokenizerFiles:
    tokenizer_json: Path
    tokenizer_config: Path | None
    vocab_size: int


@dataclass
class Checkpoint:
    path: Path
    name: str
    family: Family
    config: HFConfig
    spec: DecoderSpec | EncoderSpec
    weight_files: list[Path]
    tensor_index: dict[str, Path]  # checkpoint tensor name -> file holding it
    tokenizer: TokenizerFiles
    bos_token_id: int | None
    eos_token_ids: list[int]  # every stop id: generation_config's, the tokenizer's eos, the end-of-turn token
    generation_config: dict[str, Any] = field(default_factory=dict)
    chat: ChatSpec | None = None  # None: no chat template (a base model)

    @property
    def model_type(self) -> str:
        return self.family.model_type

    @property
    def is_encoder(self) -> bool:
        return isinstance(self.spec, EncoderSpec)

    def digest(self) -> str:
        """sha256 of what the checkpoint holds, however it is laid out: config.json, every tensor
        by name (its dtype, shape and bytes, whichever file or shard holds it), then the tokenizer,
        template and sentence-transformers files by name. The same weights as one file or as
        shards, read through a Hugging Face cache snapshot's links or from a plain copy, on any
        filesystem, give the same digest; files the export does not read are not part of it."""
        h = hashlib.sha256()
        h.update(b"config.json " + sha256_file(self.path / "config.json").encode() + b"\n")
        with _TensorFiles() as tensors:
            for name in sorted(self.tensor_index):
                tensors.hash_into(h, self.tensor_index[name], name)
        files = [self.tokenizer.tokenizer_json]
        for extra in ("tokenizer_config.json", "generation_config.json", *SENTENCE_TRANSFORMERS_FILES, "1_Pooling/config.json",
                      *(f for f in TEMPLATE_FILES if f != "tokenizer_config.json")):
            if (self.path / extra).is_file():
                files.append(self.path / extra)
        for f in files:
            h.update(f.name.encode())
            h.update(sha256_file(f).encode())
        return h.hexdigest()


class _TensorFiles:
    """Plain reads of single tensors from safetensors files (each opened once, its header parsed
    once). Not a memory map: a mapped file's pages count in the process's resident memory while it
    is open, which doubled the peak of loading a 1B model (the weights, plus the mapped file)."""

    def __init__(self) -> None:
        self._open: dict[Path, tuple[Any, int, dict[str, Any]]] = {}

    def __enter__(self) -> _TensorFiles:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for handle, _, _ in self._open.values():
            handle.close()
        self._open.clear()

    def locate(self, file: Path, name: str) -> tuple[Any, dict[str, Any], int]:
        """(the open file, positioned at the tensor's first byte; its header entry; its bytes)."""
        if file not in self._open:
            try:
                with open(file, "rb") as f:
                    size = int.from_bytes(f.read(8), "little")
                    header = json.loads(f.read(size))
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None
            self._open[file] = (open(file, "rb"), 8 + size, header)
        handle, start, header = self._open[file]
        entry = header.get(name)
        if not isinstance(entry, dict) or name == "__metadata__":
            raise CheckpointError(f"{file}: tensor {name!r} is not in its header")
        try:
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry") from None
        handle.seek(start + begin)
        return handle, entry, end - begin

    def read(self, file: Path, name: str) -> torch.Tensor:
        """One floating-point tensor, read into its own memory."""
        handle, entry, nbytes = self.locate(file, name)
        dtype = FLOAT_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {entry.get('dtype')}; expected F32, F16 or BF16")
        try:
            shape = [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file}: tensor {name!r} has a malformed header entry") from None
        tensor = torch.empty(shape, dtype=dtype)
        view = tensor.reshape(-1).view(torch.uint8).numpy()
        if nbytes != view.nbytes:
            raise CheckpointError(f"{file}: tensor {name!r} has {nbytes} bytes for shape {shape} ({entry['dtype']})")
        if handle.readinto(memoryview(view)) != view.nbytes:
            raise CheckpointError(f"{file}: cannot read tensor {name!r} (the file is truncated)")
        return tensor

    def hash_into(self, h: Any, file: Path, name: str, chunk: int = 1 << 20) -> None:
        """'name dtype shape' and the tensor's raw bytes, a block at a time."""
        handle, entry, left = self.locate(file, name)
        h.update(f"{name} {entry.get('dtype')} {entry.get('shape')}\n".encode())
        while left > 0:
            block = handle.read(min(chunk, left))
            if not block:
                raise CheckpointError(f"{file}: tensor {name!r} is truncated")
            h.update(block)
            left -= len(block)


def checkpoint_name(root: Path) -> str:
    """The model's name: the folder's, or for a Hugging Face cache snapshot
    (.../models--ORG--NAME/snapshots/REVISION) the repository's NAME, not the revision hash."""
    folder = Path(os.path.abspath(root))
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent.name.split("--")[-1]
    return root.resolve().name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read {what} ({e})") from None
    if not text.strip():
        raise CheckpointError(f"{path}: {what} is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno})") from None


def _inside(root: Path, name: str, what: str) -> Path:
    """A file named by the checkpoint itself must stay inside the checkpoint directory, by its
    name: a Hugging Face cache snapshot's files are links into the cache's blobs/, which is how
    people have their checkpoints, so links are followed, but a name may not climb out."""
    folder = Path(os.path.normpath(root))
    candidate = Path(os.path.normpath(root / name))
    if os.path.isabs(name) or folder not in candidate.parents:
        raise CheckpointError(f"{root}: {what} {name!r} points outside the checkpoint directory")
    return candidate


def _weight_files_in(path: Path) -> tuple[list[Path], dict[str, Path]]:
    """One safetensors file's tensor names."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return [path], dict.fromkeys(handle.keys(), path)
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def _weight_files(root: Path) -> tuple[list[Path], dict[str, Path]]:
    from safetensors import safe_open

    index_path = root / "model.safetensors.index.json"
    if index_path.is_file():
        index = _read_json(index_path, "safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: no 'weight_map' in the safetensors index")
        tensor_index = {}
        for tensor, shard in weight_map.items():
            shard_path = _inside(root, str(shard), "shard")
            if not shard_path.is_file():
                raise CheckpointError(f"{index_path}: shard {shard!r} (for tensor {tensor!r}) is missing")
            tensor_index[tensor] = shard_path
        files = sorted(set(tensor_index.values()))
    else:
        files = sorted(root.glob("*.safetensors"))
        if not files:
            pickles = sorted(p.name for p in root.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                raise CheckpointError(
                    f"{root}: only pickle weights ({', '.join(pickles)}); pickle can run code when loaded, "
                    "so it is refused. Convert once in a trusted environment: "
                    "AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
            raise CheckpointError(f"{root}: no *.safetensors weights found")
        tensor_index = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as handle:
                names = list(handle.keys())
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"{f}: not a readable safetensors file ({e})") from None
        for name in names:
            if not index_path.is_file():
                if name in tensor_index:
                    raise CheckpointError(f"{f}: tensor {name!r} also appears in {tensor_index[name].name}")
                tensor_index[name] = f
            elif name not in tensor_index:
                raise CheckpointError(f"{f}: tensor {name!r} is not listed in model.safetensors.index.json")
    return files, tensor_index


def _tokenizer_files(root: Path, spec: DecoderSpec | EncoderSpec) -> TokenizerFiles:
    from tokenizers import Tokenizer

    path = root / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: tokenizer.json not found (the device runtimes load it directly)")
    _read_json(path, "tokenizer.json")  # a clear message for empty / non-JSON files
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception subclass with its parse error
        raise CheckpointError(f"{path}: tokenizers cannot load it ({str(e).splitlines()[0]})") from None
    vocab = tok.get_vocab_size(with_added_tokens=True)
    if vocab > spec.vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {vocab} tokens but the model's vocab_size is "
                              f"{spec.vocab_size}; ids past {spec.vocab_size - 1} would have no embedding")
    config_path = root / "tokenizer_config.json"
    if config_path.is_file():
        _read_json(config_path, "tokenizer_config.json")
    return TokenizerFiles(path, config_path if config_path.is_file() else None, vocab)


def _special_ids(root: Path, config: dict, tokenizer: TokenizerFiles, vocab_size: int):
    """bos/eos ids: generation_config.json first (what HF generate uses), then config.json,
    then the token strings in tokenizer_config.json looked up in tokenizer.json."""
    gen_path = root / "generation_config.json"
    generation = _read_json(gen_path, "generation_config.json") if gen_path.is_file() else {}
    tok_config = _read_json(tokenizer.tokenizer_config, "tokenizer_config.json") if tokenizer.tokenizer_config else {}

    def from_token(key: str) -> int | None:
        token = tok_config.get(key) if isinstance(tok_config, dict) else None
        if isinstance(token, dict):
            token = token.get("content")
        if not isinstance(token, str):
            return None
        from tokenizers import Tokenizer
        return Tokenizer.from_file(str(tokenizer.tokenizer_json)).token_to_id(token)

    def first(key: str):
        for source in (generation, config):
            if isinstance(source, dict) and source.get(key) is not None:
                return source[key]
        return from_token(key.replace("_token_id", "_token"))

    bos = first("bos_token_id")
    eos = first("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    tokenizer_eos = from_token("eos_token")  # generation stops there too (transformers' generate does)
    if tokenizer_eos is not None and tokenizer_eos not in eos_ids:
        eos_ids = [*eos_ids, tokenizer_eos]
    for name, ids in (("bos_token_id", [] if bos is None else [bos]), ("eos_token_id", eos_ids)):
        for i in ids:
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size:
                raise CheckpointError(f"{root}: {name} {i!r} is outside the vocabulary (0..{vocab_size - 1})")
    return bos, eos_ids, generation if isinstance(generation, dict) else {}, \
        tok_config if isinstance(tok_config, dict) else {}


def load_checkpoint(path: str | Path) -> Checkpoint:
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"{root}: model directory does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (pass the checkpoint folder)")
    raw = _read_json(root / "config.json", "config.json")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{root / 'config.json'}: expected a JSON object")
    model_type = raw.get("model_type")
    if model_type in REFUSED_ENCODERS:
        raise CheckpointError(f"{root / 'config.json'}: model_type {model_type!r} is not supported: "
                              f"{REFUSED_ENCODERS[model_type]} (supported: {', '.join(supported_model_types())})")
    family = family_of(model_type)
    if family is None:
        raise CheckpointError(f"{root / 'config.json'}: model_type {model_type!r} is not supported "
                              f"(supported: {', '.join(supported_model_types())})")
    try:
        config = family.config_class.from_dict(raw)
        spec = config.to_spec()
        if isinstance(spec, EncoderSpec):
            spec = dataclasses.replace(spec, pooling=read_pooling(root), max_input_tokens=read_max_input_tokens(root, spec))
    except ConfigError as e:
        raise CheckpointError(f"{root / 'config.json'}: {str(e).removeprefix('config.json: ')}") from None
    files, tensor_index = _weight_files(root)
    dense = dense_weights(root, spec.pooling) if isinstance(spec, EncoderSpec) else None
    if dense is not None:  # sentence-transformers keeps its Dense layer's tensors (linear.*) in their own file
        extra_files, extra_index = _weight_files_in(dense)
        clash = sorted(set(extra_index) & set(tensor_index))
        if clash:
            raise CheckpointError(f"{dense}: tensor {clash[0]!r} also appears in the model's weights")
        files, tensor_index = [*files, *extra_files], {**tensor_index, **extra_index}
    tokenizer = _tokenizer_files(root, spec)
    bos, eos, generation, tok_config = _special_ids(root, raw, tokenizer, spec.vocab_size)
    chat = load_chat_spec(root, tokenizer.tokenizer_json, tok_config, eos, generation)
    return Checkpoint(path=root, name=checkpoint_name(root), family=family, config=config, spec=spec,
                      weight_files=files, tensor_index=tensor_index, tokenizer=tokenizer,
                      bos_token_id=bos, eos_token_ids=chat.stop_token_ids if chat else eos,
                      generation_config=generation, chat=chat)


# sentence-transformers' files beside config.json: the module list, the pooling and the input length.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")


def read_pooling(root: Path) -> Pooling:
    """The pooling sentence-transformers applies to this checkpoint (modules.json names the Pooling
    folder and whether a Normalize module follows); mean pooling without normalisation when the
    checkpoint is not a sentence-transformers model."""
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return Pooling()
    modules = _read_json(modules_path, "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{modules_path}: expected a list of modules")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    supported = ["Transformer", "Pooling", "Dense", "Normalize"]
    if set(kinds) - set(supported) or kinds.count("Dense") > 1 or [k for k in supported if k in kinds] != kinds:
        raise CheckpointError(f"{modules_path}: sentence-transformers modules {kinds} are not supported (supported: "
                              "Transformer, Pooling, at most one Dense, Normalize, in that order)")
    if "Pooling" not in kinds:
        raise CheckpointError(f"{modules_path}: no Pooling module")
    folder = str(modules[kinds.index("Pooling")].get("path", ""))
    config_path = _inside(root, f"{folder}/config.json", "modules.json")
    config = _read_json(config_path, "the pooling config")
    modes = [mode for key, mode in (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                                    ("pooling_mode_max_tokens", "max")) if config.get(key)]
    others = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v and
                    k not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token", "pooling_mode_max_tokens"))
    if others or len(modes) != 1:
        raise CheckpointError(f"{config_path}: exactly one of mean, CLS or max pooling is supported "
                              f"(this one asks for {', '.join(modes + others) or 'none'})")
    projection = None
    if "Dense" in kinds:
        projection = _dense(root, str(modules[kinds.index("Dense")].get("path", "")))
    return Pooling(mode=modes[0], normalize="Normalize" in kinds, source="sentence-transformers", projection=projection)


# sentence-transformers' Dense activations, by the class name its config.json records.
DENSE_ACTIVATIONS = {"torch.nn.modules.linear.Identity": "identity", "torch.nn.modules.activation.Tanh": "tanh"}


def _dense(root: Path, folder: str) -> Projection:
    config_path = _inside(root, f"{folder}/config.json", "modules.json")
    config = _read_json(config_path, "the Dense module's config")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in DENSE_ACTIVATIONS:
        raise CheckpointError(f"{config_path}: Dense activation {activation!r} is not supported "
                              f"(supported: {', '.join(DENSE_ACTIVATIONS)})")
    if not (root / folder / "model.safetensors").is_file():
        raise CheckpointError(f"{root / folder}: the Dense module's weights must be model.safetensors (pickle is refused)")
    try:
        return Projection(int(config["in_features"]), int(config["out_features"]), bool(config.get("bias", True)),
                          DENSE_ACTIVATIONS[activation])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{config_path}: in_features and out_features must be integers") from None


def dense_weights(root: Path, pooling: Pooling) -> Path | None:
    """The Dense module's weight file, which the loader reads beside model.safetensors."""
    if pooling.projection is None:
        return None

    modules = _read_json(root / "modules.json", "modules.json")
    folder = next(str(m.get("path", "")) for m in modules if str(m.get("type", "")).endswith("Dense"))
    return _inside(root, f"{folder}/model.safetensors", "modules.json")


def read_max_input_tokens(root: Path, spec: EncoderSpec) -> int:
    """The longest input the model was trained on: sentence-transformers' max_seq_length where
    the checkpoint has one (all-MiniLM-L6-v2: 256 of its 512 positions), else every position."""
    path = root / "sentence_bert_config.json"
    limit = spec.max_position_embeddings - (spec.pad_token_id + 1 if spec.positions_after_padding_id else 0)
    if path.is_file():
        value = _read_json(path, "sentence_bert_config.json")
        length = value.get("max_seq_length") if isinstance(value, dict) else None
        if isinstance(length, int) and not isinstance(length, bool) and 0 < length:
            return min(length, limit)
    return limit


def load_weights(checkpoint: Checkpoint, model: Decoder | Encoder) -> None:
    """Copy every checkpoint tensor into `model` by the family's rules, or raise.

    Each checkpoint tensor is either mapped by a rule or declared unused by the family; each model
    parameter receives exactly one tensor of the right shape. Tensors are read one at a time
    (_TensorFiles), so peak memory is the model plus one tensor.
    """

    spec = checkpoint.spec
    targets = dict(model.named_parameters())  # shared (tied) parameters appear once
    expected = {}
    for rule in checkpoint.family.rules_for(spec.num_layers):
        if all(o in targets for o in rule.ours):
            expected[rule.checkpoint] = rule
    filled: set[str] = set()
    tensors = _TensorFiles()
    leftovers, tied_duplicate = [], None
    try:
        for name, file in sorted(checkpoint.tensor_index.items()):
            rule = expected.get(name)
            if rule is None:
                if spec.tie_word_embeddings and name.endswith("lm_head.weight"):
                    tied_duplicate = (name, file)
                elif not checkpoint.family.is_unused(name):
                    leftovers.append(name)
                continue
            tensor = tensors.read(file, name)
            if rule.transform is split_rows:
                rows = [targets[o].shape[0] for o in rule.ours]
                if tensor.dim() == 0 or tensor.shape[0] != sum(rows):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {list(tensor.shape)}; the config implies "
                                          f"{sum(rows)} rows ({' + '.join(map(str, rows))} for {', '.join(rule.ours)})")
                parts = torch.split(tensor, rows, dim=0)
            elif isinstance(rule.transform, SpecTransform):
                parts = rule.transform(tensor, spec)
            else:
                parts = rule.transform(tensor) if tensor.dim() else (tensor,)
            for our_name, part in zip(rule.ours, parts, strict=True):
                param = targets[our_name]
                if tuple(part.shape) != tuple(param.shape):
                    raise CheckpointError(f"{file}: tensor {name!r} has shape {list(tensor.shape)}, the config "
                                          f"implies {list(param.shape)} for {our_name}")
                with torch.no_grad():
                    param.copy_(part.to(param.dtype))
                filled.add(our_name)
        if leftovers:
            raise CheckpointError(f"{checkpoint.path}: tensors not used by the {checkpoint.model_type} model: "
                                  f"{', '.join(leftovers[:5])}{' ...' if len(leftovers) > 5 else ''} "
                                  "(does config.json match the weights?)")
        missing = sorted(set(targets) - filled)
        if missing:
            names = [r.checkpoint for r in expected.values() if set(r.ours) & set(missing)]
            raise CheckpointError(f"{checkpoint.path}: missing tensors {', '.join(names[:5])}"
                                  f"{' ...' if len(names) > 5 else ''}")
        if tied_duplicate is not None:
            # Some tied checkpoints store the head anyway; accept it only if it is the same tensor.
            name, file = tied_duplicate
            head = tensors.read(file, name)
            if head.shape != model.embed_tokens.weight.shape or not torch.equal(
                    head.to(model.embed_tokens.weight.dtype), model.embed_tokens.weight.detach()):
                raise CheckpointError(f"{file}: tie_word_embeddings is true but {name!r} differs from the "
                                      "embedding; set tie_word_embeddings=false in config.json")
    finally:
        tensors.close()


def require_decoder(checkpoint: Checkpoint, command: str) -> None:
    """Refuse an encoder where only a decoder makes sense (generation, its peers, its sensitivity)."""
    if checkpoint.is_encoder:
        raise CheckpointError(f"{checkpoint.path}: {command} works on decoders (chat and completion models); this "
                              f"is an encoder ({checkpoint.model_type}, {checkpoint.spec.task})")


@contextlib.contextmanager
def _without_random_init():
    """nn.Linear and nn.Embedding allocate their weights without drawing random values:
    load_weights overwrites every parameter (and raises when one is missing), and the draws took
    17.4 s of the 28 s it took to build the 1B shape's decoder on 2 cores."""
    saved = {cls: cls.reset_parameters for cls in (nn.Linear, nn.Embedding)}
    try:
        for cls in saved:
            cls.reset_parameters = lambda self: None
        yield
    finally:
        for cls, method in saved.items():
            cls.reset_parameters = method


def build_model(checkpoint: Checkpoint, max_positions: int | None = None) -> Decoder | Encoder:
    """An fp32 eval-mode Decoder (or Encoder) holding the checkpoint's weights."""
    with _without_random_init():
        model = build(checkpoint.spec, max_positions)
    load_weights(checkpoint, model)
    return model.eval()
