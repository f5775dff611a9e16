"""Target recipes: `targets/<name>.toml` parsed into frozen dataclasses.

Library code asks a recipe what to do (which formats, which quantization, which thresholds,
where the bundle goes); it never branches on a target's name.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .errors import InputError

FORMATS = ("executorch", "onnx", "coreml")


class RecipeError(InputError):
    """A target recipe file or a requested recipe is invalid; the message names it."""


@dataclass(frozen=True)
class Thresholds:
    """Parity thresholds for one quantization recipe (see docs/PARITY.md for each metric)."""

    top1_min: float = 1.0
    top5_overlap_min: float = 1.0
    kl_max: float = 1e-6
    cosine_min: float = 0.9999
    max_abs_max: float | None = None
    greedy_prefix_min: float = 1.0  # fraction of the reference's greedy tokens reproduced exactly
    text_top1_min: float = 0.0  # top-1 agreement over the held-out text (verify.measure_text)
    ppl_change_max: float | None = None  # relative perplexity change on the held-out text (0.05: +5%)
    measured: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    params: dict[str, Any]
    thresholds: Thresholds


AUTO = "auto"  # --quant auto: search the format's candidates (FormatRecipe.auto)


@dataclass(frozen=True)
class AutoSearch:
    """`--quant auto`: the candidate recipes, smallest artifact first, and the quality every
    candidate is held to; the first that keeps it ships."""

    candidates: tuple[str, ...]
    thresholds: Thresholds


@dataclass(frozen=True)
class FormatRecipe:
    format: str
    default_recipe: str
    recipes: dict[str, QuantRecipe]
    auto: AutoSearch | None = None

    def recipe(self, name: str | None) -> QuantRecipe:
        """Recipe `name`, or the default one; where the default is auto, its first (smallest)
        candidate (what `bench` compares with the peers unless told otherwise)."""
        chosen = name or self.default_recipe
        if chosen == AUTO and self.auto:
            chosen = self.auto.candidates[0]
        if chosen not in self.recipes:
            raise RecipeError(f"quantization recipe {chosen!r} is not defined for {self.format} "
                              f"(choose from: {', '.join(self.choices())})")
        return self.recipes[chosen]

    def choices(self) -> list[str]:
        return ([AUTO] if self.auto else []) + list(self.recipes)

    def plan(self, name: str | None) -> tuple[list[QuantRecipe], Thresholds | None]:
        """The recipes to try for `--quant name` and, for auto, the gate they share (None: each
        recipe's own thresholds)."""
        chosen = name or self.default_recipe
        if chosen == AUTO:
            if self.auto is None:
                raise RecipeError(f"{self.format} has no auto search in this target (choose from: "
                                  f"{', '.join(self.recipes)})")
            return [self.recipes[c] for c in self.auto.candidates], self.auto.thresholds
        return [self.recipe(chosen)], None


@dataclass(frozen=True)
class TargetRecipe:
    name: str
    description: str
    max_seq_len: int
    formats: dict[str, FormatRecipe]
    app_project: str = ""  # the demo app's project folder, relative to the checkout
    app_assets: str = ""  # where the bundle goes inside an app project
    max_app_bytes: int = 0  # above this, the bundle is side-loaded instead of shipped in the app
    sideload: tuple[str, ...] = ()  # commands, with {bundle} for the bundle's path
    max_parameters: int = 0  # larger checkpoints are refused before any export work (0: no limit)


def target_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in resources.files("exporter.targets").iterdir()
                  if p.name.endswith(".toml"))


def _thresholds(raw: dict[str, Any], where: str) -> Thresholds:
    known = set(Thresholds.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"{where}: unknown parity keys {sorted(unknown)}")
    return Thresholds(**raw)


def load_target(name: str) -> TargetRecipe:
    if name not in target_names():
        raise RecipeError(f"unknown target {name!r} (choose from: {', '.join(target_names())})")
    source = resources.files("exporter.targets") / f"{name}.toml"
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"targets/{name}.toml: {e}") from None
    formats = {}
    for fmt, body in raw.get("formats", {}).items():
        if fmt not in FORMATS:
            raise RecipeError(f"targets/{name}.toml: unknown format {fmt!r} (known: {', '.join(FORMATS)})")
        recipes = {}
        for recipe_name, params in body.get("recipes", {}).items():
            params = dict(params)
            thresholds = _thresholds(params.pop("parity", {}), f"targets/{name}.toml [{fmt}.{recipe_name}]")
            recipes[recipe_name] = QuantRecipe(recipe_name, params, thresholds)
        auto = None
        if "auto" in body:
            raw_auto = dict(body["auto"])
            candidates = tuple(raw_auto.get("candidates", ()))
            unknown = [c for c in candidates if c not in recipes]
            if not candidates or unknown:
                raise RecipeError(f"targets/{name}.toml [formats.{fmt}.auto]: candidates must name recipes of "
                                  f"{fmt} (unknown: {unknown or 'none given'})")
            auto = AutoSearch(candidates, _thresholds(raw_auto.get("parity", {}), f"targets/{name}.toml [{fmt}.auto]"))
        default = body.get("default_recipe")
        if default not in recipes and not (default == AUTO and auto):
            raise RecipeError(f"targets/{name}.toml: default_recipe {default!r} of {fmt} "
                              f"has no [formats.{fmt}.recipes.<name>] table")
        formats[fmt] = FormatRecipe(fmt, default, recipes, auto)
    bundle = raw.get("bundle", {})
    return TargetRecipe(name=raw.get("name", name), description=raw.get("description", ""),
                        max_seq_len=int(raw.get("max_seq_len", 512)), formats=formats,
                        app_project=bundle.get("app_project", ""), app_assets=bundle.get("app_assets", ""),
                        max_app_bytes=int(bundle.get("max_app_bytes", 0)),
                        sideload=tuple(bundle.get("sideload", ())),
                        max_parameters=int(raw.get("max_parameters", 0)))
