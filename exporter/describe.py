"""`slm-export inspect`: what a checkpoint is and what each target would make of it."""

from __future__ import annotations

from typing import Any

from .checkpoint import Checkpoint
from .recipes import load_target, target_names


def context_length(checkpoint: Checkpoint, requested: int) -> int:
    """The static cache length: the request, capped by what the model's positions allow."""
    return min(requested, checkpoint.spec.max_position_embeddings)


def describe_encoder(checkpoint: Checkpoint) -> dict[str, Any]:
    """An encoder checkpoint: its task (and labels, pooling, input limit) and what each target emits."""
    spec = checkpoint.spec
    targets = {}
    for name in target_names():
        target = load_target(name)
        targets[name] = {"max_seq_len": min(target.encoder_max_seq_len, spec.max_input_tokens),
                         "artifacts": [{"format": f, "quantization": r.default_recipe, "recipes": r.choices()}
                                       for f, r in target.encoder_formats.items()]}
    return {
        "path": str(checkpoint.path), "name": checkpoint.name, "family": checkpoint.model_type, "kind": "encoder",
        "task": spec.task, "labels": list(spec.labels),
        "pooling": spec.pooling.to_json() if spec.task == "feature-extraction" else None,
        "parameters": spec.num_parameters, "layers": spec.num_layers, "hidden_size": spec.hidden_size,
        "heads": spec.num_heads, "vocab_size": spec.vocab_size, "positions": spec.max_position_embeddings,
        "max_input_tokens": spec.max_input_tokens,
        "tokenizer": {"path": str(checkpoint.tokenizer.tokenizer_json), "vocab": checkpoint.tokenizer.vocab_size},
        "weights": [p.name for p in checkpoint.weight_files],
        "config_defaults_used": checkpoint.config.defaults_used,
        "config_unknown_keys": sorted(checkpoint.config.extra),
        "targets": targets,
    }


def render_encoder(info: dict[str, Any]) -> str:
    pooling = info["pooling"]
    lines = [
        f"model        {info['name']}  ({info['path']})",
        f"family       {info['family']} (encoder)",
        f"task         {info['task']}" + (f"; labels {', '.join(info['labels'])}" if info["labels"] else "")
        + (f"; {pooling['mode']} pooling{', normalised' if pooling['normalize'] else ''} ({pooling['source']})"
           if pooling else ""),
        f"parameters   {info['parameters']:,}  ({info['layers']} layers, hidden {info['hidden_size']}, "
        f"{info['heads']} heads)",
        f"vocab        {info['vocab_size']:,} (tokenizer: {info['tokenizer']['vocab']:,} tokens)",
        f"inputs       up to {info['max_input_tokens']:,} tokens ({info['positions']:,} positions)",
        f"tokenizer    {info['tokenizer']['path']}",
        f"weights      {', '.join(info['weights'])}",
    ]
    for name, target in info["targets"].items():
        emitted = ", ".join(f"{a['format']} ({a['quantization']})" for a in target["artifacts"]) or "nothing"
        lines.append(f"--target {name:<8} {emitted}; inputs up to {target['max_seq_len']} tokens")
    return "\n".join(lines)


def describe(checkpoint: Checkpoint) -> dict[str, Any]:
    spec = checkpoint.spec
    if checkpoint.is_encoder:
        return describe_encoder(checkpoint)
    targets = {}
    for name in target_names():
        target = load_target(name)
        targets[name] = {
            "max_seq_len": context_length(checkpoint, target.max_seq_len),
            "artifacts": [{"format": f, "quantization": r.default_recipe, "recipes": r.choices(),
                           **({"auto_candidates": list(r.auto.candidates)} if r.auto else {})}
                          for f, r in target.formats.items()],
            "bundle": f"{target.app_project}/{target.app_assets}",
            "max_app_bytes": target.max_app_bytes,
        }
    return {
        "path": str(checkpoint.path),
        "name": checkpoint.name,
        "family": checkpoint.model_type,
        "parameters": spec.num_parameters,
        "layers": spec.num_layers,
        "hidden_size": spec.hidden_size,
        "heads": spec.num_heads,
        "kv_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size,
        "context": spec.max_position_embeddings,
        "tied_embeddings": spec.tie_word_embeddings,
        "rope_scaling": spec.rope_scaling.kind if spec.rope_scaling else None,
        "layer_windows": spec.windows(),  # each layer's sliding window (None: global attention)
        "tokenizer": {"path": str(checkpoint.tokenizer.tokenizer_json), "vocab": checkpoint.tokenizer.vocab_size},
        "chat": _chat(checkpoint),
        "bos_token_id": checkpoint.bos_token_id,
        "eos_token_ids": checkpoint.eos_token_ids,
        "weights": [p.name for p in checkpoint.weight_files],
        "config_defaults_used": checkpoint.config.defaults_used,
        "config_unknown_keys": sorted(checkpoint.config.extra),
        "targets": targets,
    }


def _render_windows(windows: list) -> str:
    """'global on all 30 layers', or the layer types in order, runs collapsed."""
    names = ["global" if w is None else f"local (window {w})" for w in windows]
    if len(set(names)) == 1:
        return f"{names[0]} on all {len(names)} layers"
    runs: list[list] = []
    for name in names:
        if runs and runs[-1][0] == name:
            runs[-1][1] += 1
        else:
            runs.append([name, 1])
    return "layer types " + ", ".join(f"{name} x{count}" if count > 1 else name for name, count in runs)


def _chat(checkpoint: Checkpoint) -> dict[str, Any] | None:
    chat = checkpoint.chat
    if chat is None:
        return None
    return {"template_source": chat.source, "stop_token_ids": chat.stop_token_ids,
            "end_of_turn_token": chat.end_of_turn, "bos_in_template": chat.bos_in_template,
            "portable": chat.portable.to_json() if chat.portable else None, "unsupported": chat.unsupported,
            "generation": chat.generation}


def _render_chat(chat: dict[str, Any] | None) -> list[str]:
    if chat is None:
        return ["chat         no chat template (a base model: apps show a completion screen)"]
    portable = chat["portable"]
    lines = [f"chat         template from {chat['template_source']}; end of turn {chat['end_of_turn_token']!r}; "
             f"bos {'written by the template' if chat['bos_in_template'] else 'not in the template'}",
             "  portable   " + (", ".join(f"{role} {r['prefix']!r}...{r['suffix']!r}" for role, r in portable["roles"].items())
                                + f"; generation prompt {portable['generation_prompt']!r}"
                                + (f"; default system {portable['default_system']!r}" if portable["default_system"]
                                   else "") if portable else "none: apps cannot apply this template")]
    lines += [f"  cannot     {u}" for u in chat["unsupported"]]
    lines.append("  defaults   " + (", ".join(f"{k} {v}" for k, v in chat["generation"].items())
                                    or "none in generation_config.json"))
    return lines


def render(info: dict[str, Any]) -> str:
    if info.get("kind") == "encoder":
        return render_encoder(info)
    lines = [
        f"model        {info['name']}  ({info['path']})",
        f"family       {info['family']}",
        f"parameters   {info['parameters']:,}  ({info['layers']} layers, hidden {info['hidden_size']}, "
        f"{info['heads']} heads / {info['kv_heads']} kv heads, head_dim {info['head_dim']})",
        f"vocab        {info['vocab_size']:,} (tokenizer: {info['tokenizer']['vocab']:,} tokens)",
        f"context      {info['context']:,} positions" + (f", rope scaling {info['rope_scaling']}"
                                                       if info["rope_scaling"] else ""),
        f"embeddings   {'tied (stored once)' if info['tied_embeddings'] else 'untied'}",
        f"attention    {_render_windows(info['layer_windows'])}",
        f"tokenizer    {info['tokenizer']['path']}",
        f"bos / stop   {info['bos_token_id']} / {info['eos_token_ids']}",
        *_render_chat(info["chat"]),
        f"weights      {', '.join(info['weights'])}",
    ]
    for name, target in info["targets"].items():
        emitted = ", ".join(f"{a['format']} ({a['quantization']})" for a in target["artifacts"]) or "nothing"
        lines.append(f"--target {name:<8} {emitted}; cache {target['max_seq_len']} tokens; bundle -> {target['bundle']}")
    return "\n".join(lines)


def describe_targets(names: list[str] | None = None) -> dict[str, Any]:
    """`slm-export targets`: each built-in target (or each given target file, validated) with its
    formats, their default recipe, auto candidates, recipes and portable names."""
    out = {}
    for name in names or target_names():
        target = load_target(name)
        out[name] = {"name": target.name, "description": target.description, "max_seq_len": target.max_seq_len,
                     "bundle": f"{target.app_project}/{target.app_assets}" if target.app_assets else None,
                     "formats": {fmt: {"default": r.default_recipe,
                                       "auto_candidates": list(r.auto.candidates) if r.auto else [],
                                       "recipes": list(r.recipes), "portable": dict(r.portable)}
                                 for fmt, r in target.formats.items()}}
    return out


def render_targets(info: dict[str, Any]) -> str:
    lines = []
    for name, target in info.items():
        lines.append(f"{name}: {target['description']} (cache {target['max_seq_len']} tokens"
                     + (f"; bundle into {target['bundle']})" if target["bundle"] else "; no app bundle)"))
        for fmt, f in target["formats"].items():
            default = f["default"] + (f" ({' -> '.join(f['auto_candidates'])})" if f["auto_candidates"] else "")
            portable = ", ".join(f"{k}={v}" for k, v in f["portable"].items())
            lines.append(f"  {fmt:<11} default {default}; recipes: {', '.join(f['recipes'])}"
                         + (f"; portable: {portable}" if portable else ""))
    return "\n".join(lines)
