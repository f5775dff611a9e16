"""What a model family contributes: a config class, a weight-name table, a tiny test config.

The registry in `exporter.models` maps HF `model_type` to one `Family`. Weight names are data:
each `WeightRule` maps one checkpoint tensor (a template with `{i}` for the layer index) to one or
more parameters of `Decoder`; every checkpoint tensor must be matched by a rule or by an `unused`
pattern, so a leftover tensor is an error rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError
from .decoder import DecoderSpec

log = logging.getLogger(__name__)


class ConfigError(InputError):
    """config.json describes a model we cannot build; the message names the field."""


def _identity(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (t,)


def split_rows(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A fused weight ([q|k|v] or [gate|up] stacked along dim 0) split into the rule's parameters,
    each as many rows as that parameter has: the loader does the split, since only the built model
    knows the sizes (this function is its marker)."""
    raise NotImplementedError("split_rows is applied by checkpoint.load_weights")


class SpecTransform:
    """A weight transform that needs the model's shape (heads, head_dim, ...): called with the
    tensor and the `DecoderSpec` by the loader."""

    def __init__(self, fn: Callable[[torch.Tensor, DecoderSpec], tuple[torch.Tensor, ...]]):
        self.fn = fn

    def __call__(self, t: torch.Tensor, spec: DecoderSpec) -> tuple[torch.Tensor, ...]:
        return self.fn(t, spec)


@dataclass(frozen=True)
class WeightRule:
    checkpoint: str
    ours: tuple[str, ...]
    # Maps the checkpoint tensor to the tensors for `ours`, in order (e.g. split a fused qkv).
    transform: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] = _identity

    def expand(self, num_layers: int) -> list[WeightRule]:
        if "{i}" not in self.checkpoint:
            return [self]
        return [dataclasses.replace(self, checkpoint=self.checkpoint.format(i=i),
                                    ours=tuple(o.format(i=i) for o in self.ours))
                for i in range(num_layers)]


def same_names(pairs: dict[str, str]) -> tuple[WeightRule, ...]:
    return tuple(WeightRule(checkpoint=ckpt, ours=(ours,)) for ckpt, ours in pairs.items())


@dataclass(frozen=True)
class Family:
    model_type: str
    config_class: type  # an HFConfig subclass
    rules: tuple[WeightRule, ...]
    unused: tuple[str, ...]  # regexes of checkpoint tensors that are deliberately not used
    tiny_config: dict[str, Any]  # a small HF config.json, for tests and docs
    description: str = ""
    # The tests' parity cases, named: (name, config overrides on tiny_config) for each variant the
    # family must cover (GQA ratios, rope scaling, tied heads, windows). The first is tiny_config.
    test_variants: tuple[tuple[str, dict[str, Any]], ...] = (("tiny", {}),)

    def test_cases(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, {**self.tiny_config, **overrides}) for name, overrides in self.test_variants]

    def rules_for(self, num_layers: int) -> list[WeightRule]:
        return [r for rule in self.rules for r in rule.expand(num_layers)]

    def is_unused(self, name: str) -> bool:
        return any(re.fullmatch(p, name) for p in self.unused)


@dataclass
class HFConfig:
    """Base for family configs: field names are those of the HF config.json.

    Unknown keys are kept in `extra` (never silently dropped from view); `defaults_used` lists
    the fields that fell back to a default, for `inspect` and the logs.
    """

    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    defaults_used: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HFConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "defaults_used"}
        known = {k: v for k, v in raw.items() if k in names}
        extra = {k: v for k, v in raw.items() if k not in names}
        try:
            config = cls(**known)
        except TypeError as e:  # a required field is absent
            missing = re.findall(r"'(\w+)'", str(e))
            raise ConfigError(f"config.json lacks required field {', '.join(missing) or str(e)}") from None
        config.extra = extra
        config.defaults_used = sorted(n for n in names if n not in raw
                                      and any(f.name == n and f.default is not dataclasses.MISSING
                                              for f in dataclasses.fields(cls)))
        if config.defaults_used:
            log.debug("config.json: defaults used for %s", ", ".join(config.defaults_used))
        return config

    def to_spec(self) -> DecoderSpec:
        raise NotImplementedError


def positive_int(config: HFConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"config.json: {name} must be a positive integer, got {value!r}")


def positive_float(config: HFConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"config.json: {name} must be a positive number, got {value!r}")


# Far beyond any released model (Llama 4 Scout: 10 M); a larger value is a broken config.
MAX_PLAUSIBLE_CONTEXT = 1 << 24


def plausible_context(config: HFConfig, name: str) -> None:
    value = getattr(config, name)
    if value > MAX_PLAUSIBLE_CONTEXT:
        raise ConfigError(f"config.json: {name} {value} is implausibly large (limit {MAX_PLAUSIBLE_CONTEXT})")
