"""`slm-export sensitivity`: where a quantization recipe loses a model's predictions, part by part.

The recipe is applied to one part of the fp32 decoder at a time (the token embedding, each decoder
block, the head, and each kind of linear across all blocks), the rest left in fp32, and each
partly quantized model reads the held-out text (docs/PARITY.md) teacher-forced. A part's figures
are what quantizing it alone costs: the top-1 agreement it loses and the perplexity change it
adds. Losses do not add up exactly (errors compound), but the ranking says where more bits would
help. It runs eagerly, with the runtime's own quantization code applied to an eager copy (the
estimate `--quant auto` uses to skip a candidate; only runtimes with one can be analysed).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from .checkpoint import Checkpoint, build_model
from .errors import InputError
from .progress import stage
from .recipes import QuantRecipe
from .reference import ReferenceLM
from .verify import make_text_reference, measure_text, tokenize_quality_text

log = logging.getLogger(__name__)

LINEAR_KINDS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Part:
    """A named set of the decoder's modules, by fully qualified name."""

    name: str
    kind: str  # "all", "embedding", "block", "head" or "linear kind"

    def holds(self, fqn: str) -> bool:
        if self.kind == "all":
            return True
        if self.kind == "embedding":
            return fqn.startswith("embed_")
        if self.kind == "head":
            return fqn == "lm_head"
        if self.kind == "block":
            return fqn.startswith(self.name + ".")
        return fqn.startswith("layers.") and fqn.endswith("." + self.name)


def parts(decoder) -> list[Part]:
    names = {name.rsplit(".", 1)[-1] for name, _ in decoder.named_modules()}
    return ([Part("whole recipe", "all"), Part("embed_tokens", "embedding")]
            + [Part(f"layers.{i}", "block") for i in range(len(decoder.layers))]
            + [Part("lm_head", "head")]
            + [Part(kind, "linear kind") for kind in LINEAR_KINDS if kind in names])


def layer_sensitivity(checkpoint: Checkpoint, module, recipe: QuantRecipe, max_seq_len: int,
                      max_text_tokens: int | None = None) -> dict[str, Any]:
    """Every part's figures on the held-out text (at most `max_text_tokens` scored positions, the
    passages taken in order), with the recipe, the whole recipe's figures and the seconds taken."""
    from .tokenizer import load_tokenizer

    if not hasattr(module, "estimate_session"):
        raise InputError(f"{module.FORMAT} has no eager estimate of its quantization; sensitivity needs one "
                         "(use --format executorch)")
    start = time.monotonic()
    with stage("reference on the held-out text (fp32 PyTorch)"):
        decoder = build_model(checkpoint, max_seq_len)
        passages = tokenize_quality_text(load_tokenizer(checkpoint.tokenizer.tokenizer_json), max_seq_len)
        if max_text_tokens is not None:
            kept, budget = [], max_text_tokens
            for domain, ids in passages:
                if budget < 2:
                    break
                kept.append((domain, ids[:budget + 1]))
                budget -= len(kept[-1][1]) - 1
            passages = kept
        refs = make_text_reference(ReferenceLM(decoder, max_seq_len), passages)
    rows = []
    todo = parts(decoder)
    for i, part in enumerate(todo):
        with stage(f"sensitivity {i + 1}/{len(todo)}: {recipe.name} on {part.name} only"):
            session = module.estimate_session(copy.deepcopy(decoder), recipe, max_seq_len, only=part.holds)
            measured = measure_text(session, refs)
        rows.append({"part": part.name, "kind": part.kind, "top1_loss": 1 - measured["text_top1"],
                     "text_top1": measured["text_top1"], "ppl_change": measured["ppl_change"]})
    return {"format": module.FORMAT, "recipe": recipe.name, "params": recipe.params,
            "text_tokens": sum(len(r.ids) - 1 for r in refs), "seconds": round(time.monotonic() - start, 1),
            "parts": rows}


def render(result: dict[str, Any], top: int = 10) -> str:
    """The whole recipe, then every part kind's rows, most costly first (blocks: the `top` worst)."""
    rows = result["parts"]
    lines = [f"{result['format']} {result['recipe']} applied to one part at a time, the rest fp32; held-out text, "
             f"{result['text_tokens']} positions ({result['seconds']:.0f} s)",
             f"{'part':<16} {'top-1 kept':>10} {'top-1 lost':>10} {'perplexity':>10}"]

    def line(r: dict[str, Any]) -> str:
        return f"{r['part']:<16} {r['text_top1']:>10.3f} {r['top1_loss']:>10.3f} {r['ppl_change']:>+10.1%}"

    for kind, title, limit in (("all", None, None), ("embedding", None, None), ("head", None, None),
                               ("linear kind", "each kind of linear, in every block:", None),
                               ("block", f"decoder blocks, most costly first (of {sum(r['kind'] == 'block' for r in rows)}):",
                                top)):
        chosen = sorted((r for r in rows if r["kind"] == kind), key=lambda r: -r["top1_loss"])[:limit]
        if title and chosen:
            lines.append(title)
        lines += [line(r) for r in chosen]
    return "\n".join(lines)
