"""Target recipes: `targets/<name>.toml` parsed into frozen dataclasses.

Library code asks a recipe what to do (which formats, which quantization, which thresholds,
where the bundle goes); it never branches on a target's name.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import InputError
from .runtimes import REGISTRY

log = logging.getLogger(__name__)


class RecipeError(InputError):
    """A target recipe file or a requested recipe is invalid; the message names it."""


@dataclass(frozen=True)
class Thresholds:
    """Parity thresholds for one quantization recipe (see docs/PARITY.md for each metric)."""

    top1_min: float = 1.0
    top5_overlap_min: float = 1.0
    kl_mean_max: float = 1e-6  # compared with kl_mean (the mean KL over the teacher-forced steps)
    cosine_min: float = 0.9999
    max_abs_max: float | None = None
    greedy_prefix_min: float = 1.0  # fraction of the reference's greedy tokens reproduced exactly
    text_top1_min: float = 0.0  # top-1 agreement over the held-out text (verify.measure_text)
    ppl_change_max: float | None = None  # relative perplexity change on the held-out text (0.05: +5%)
    measured: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EncoderThresholds:
    """Parity thresholds of an encoder recipe (each applies to the tasks that have the figure)."""

    cosine_min: float = 0.9999
    neighbour_agreement_min: float = 1.0
    label_agreement_min: float = 1.0
    span_match_min: float = 1.0
    max_abs_max: float | None = None
    measured: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    params: dict[str, Any]
    thresholds: Thresholds | EncoderThresholds


AUTO = "auto"  # --quant auto: search the format's candidates (FormatRecipe.auto)


@dataclass(frozen=True)
class AutoSearch:
    """`--quant auto`: the candidate recipes, smallest artifact first, and the quality every
    candidate is held to; the first that keeps it ships."""

    candidates: tuple[str, ...]
    thresholds: Thresholds


# Portable quantization names: every format maps each to its own recipe of that class in the
# target file (`portable = { int4 = "8da4w-e8", ... }`), so `--quant int4` means the same thing
# for every format of a target. A format's own recipe of the same name wins (ONNX's `int8`).
PORTABLE_NAMES = ("fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class FormatRecipe:
    format: str
    default_recipe: str
    recipes: dict[str, QuantRecipe]
    auto: AutoSearch | None = None
    portable: dict[str, str] = field(default_factory=dict)  # portable name -> recipe name

    def resolve(self, name: str | None) -> str:
        """The recipe name (or auto) that `--quant name` means for this format."""
        chosen = name or self.default_recipe
        if chosen == AUTO and self.auto or chosen in self.recipes:
            return chosen
        if chosen in self.portable:
            return self.portable[chosen]
        raise RecipeError(f"quantization recipe {chosen!r} is not defined for {self.format} "
                          f"(choose from: {', '.join(self.choices())})")

    def recipe(self, name: str | None) -> QuantRecipe:
        """Recipe `name`, or the default one; where the default is auto, its first (smallest)
        candidate (what `bench` compares with the peers unless told otherwise)."""
        chosen = self.resolve(name)
        return self.recipes[self.auto.candidates[0] if chosen == AUTO else chosen]

    def choices(self) -> list[str]:
        mapped = [f"{k} (= {v})" for k, v in self.portable.items() if k not in self.recipes]
        return ([AUTO] if self.auto else []) + list(self.recipes) + mapped

    def plan(self, name: str | None) -> tuple[list[QuantRecipe], Thresholds | None]:
        """The recipes to try for `--quant name` and, for auto, the gate they share (None: each
        recipe's own thresholds)."""
        chosen = name or self.default_recipe
        if chosen != AUTO:
            chosen = self.resolve(chosen)
        if chosen == AUTO:
            if self.auto is None:
                raise RecipeError(f"{self.format} has no auto search in this target (choose from: "
                                  f"{', '.join(self.recipes)})")
            return [self.recipes[c] for c in self.auto.candidates], self.auto.thresholds
        return [self.recipe(chosen)], None


@dataclass(frozen=True)
class QuantChoice:
    """`--quant`: one name for every format and/or per-format names (`int4,coreml=int8`)."""

    default: str | None = None
    per_format: dict[str, str] = field(default_factory=dict)

    def for_format(self, fmt: str) -> str | None:
        return self.per_format.get(fmt, self.default)


def parse_quant(value: str | None) -> QuantChoice:
    if value is None:
        return QuantChoice()
    default, per_format = None, {}
    for item in (v.strip() for v in value.split(",")):
        if not item:
            raise RecipeError(f"--quant {value!r}: an empty name")
        fmt, sep, name = item.partition("=")
        if not sep:
            if default is not None:
                raise RecipeError(f"--quant {value!r}: two names for every format ({default}, {item}); "
                                  "name the format for the second (FORMAT=RECIPE)")
            default = item
            continue
        fmt, name = fmt.strip(), name.strip()
        if fmt not in REGISTRY:
            raise RecipeError(f"--quant {value!r}: unknown format {fmt!r} (known: {', '.join(REGISTRY)})")
        if fmt in per_format or not name:
            raise RecipeError(f"--quant {value!r}: {fmt} is given {'twice' if name else 'no recipe'}")
        per_format[fmt] = name
    return QuantChoice(default, per_format)


@dataclass(frozen=True)
class TargetRecipe:
    name: str
    description: str
    max_seq_len: int
    formats: dict[str, FormatRecipe]
    app_project: str = ""  # the demo app's project folder, relative to the checkout
    app_assets: str = ""  # where the bundle goes inside an app project
    max_app_bytes: int = 0  # above this, the bundle is side-loaded instead of shipped in the app (0: no limit)
    sideload: tuple[str, ...] = ()  # commands, with {bundle} for the bundle's path
    max_parameters: int = 0  # larger checkpoints are refused before any export work (0: no limit)
    # Encoders: the formats and recipes ([encoder.formats.<format>], the same schema with
    # EncoderThresholds), and the longest input (the model's own limit when lower).
    encoder_formats: dict[str, FormatRecipe] = field(default_factory=dict)
    encoder_max_seq_len: int = 512


def target_names() -> list[str]:
    """The built-in targets: targets/*.toml (targets/formats/ holds the format tables they include)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files("exporter.targets").iterdir()
                  if p.name.endswith(".toml"))


# Old threshold names, still read: the old name said less than what it checks.
RENAMED_THRESHOLDS = {"kl_max": "kl_mean_max"}


def _thresholds(raw: dict[str, Any], where: str, kind: type = Thresholds):
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: parity must be a table")
    raw = dict(raw)
    for old, new in RENAMED_THRESHOLDS.items():
        if old in raw:
            if new in raw:
                raise RecipeError(f"{where}: parity sets both {old} and {new}; keep {new}")
            log.warning("%s: parity key %s is deprecated, it is compared with the mean KL; call it %s",
                        where, old, new)
            raw[new] = raw.pop(old)
    known = set(kind.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise RecipeError(f"{where}: unknown parity keys {sorted(unknown)} (known: {', '.join(sorted(known))})")
    wrong = [k for k, v in raw.items() if k != "measured" and not (isinstance(v, int | float) and not isinstance(v, bool))]
    if wrong:
        raise RecipeError(f"{where}: parity {wrong[0]} must be a number, not {raw[wrong[0]]!r}")
    return kind(**raw)


TARGET_KEYS = {"name", "description", "max_seq_len", "max_parameters", "bundle", "formats", "include", "encoder"}
ENCODER_KEYS = {"max_seq_len", "formats"}
FORMAT_KEYS = {"default_recipe", "auto", "recipes", "portable"}
BUNDLE_KEYS = {"app_project", "app_assets", "max_app_bytes", "sideload"}


@dataclass(frozen=True)
class _Source:
    """A target file: its text and how to name it in errors; includes resolve beside it."""

    label: str
    text: str
    directory: Any  # a Path or an importlib.resources Traversable


def _builtin_source(relative: str) -> _Source:
    return _Source(f"targets/{relative}", (resources.files("exporter.targets") / relative).read_text(encoding="utf-8"),
                   (resources.files("exporter.targets") / relative).parent)


def _parse(source: _Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{source.label}: {e}") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _with_includes(source: _Source, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The file's tables over those of the files it includes (`include = ["formats/executorch.toml"]`,
    relative to the file, else to the built-in targets folder), recursively."""
    raw = _parse(source)
    includes = raw.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for relative in includes:
        if not isinstance(relative, str):
            raise RecipeError(f"{source.label}: include must name TOML files, not {relative!r}")
        beside = source.directory / relative
        if beside.is_file():
            included = _Source(f"{source.label.rsplit('/', 1)[0]}/{relative}" if "/" in source.label else relative,
                               beside.read_text(encoding="utf-8"), beside.parent)
        elif (resources.files("exporter.targets") / relative).is_file():
            included = _builtin_source(relative)
        else:
            raise RecipeError(f"{source.label}: include {relative!r} not found beside it nor among the built-in "
                              "targets (e.g. formats/executorch.toml)")
        if included.label in seen:
            raise RecipeError(f"{source.label}: include {relative!r} includes itself")
        merged = _merge(merged, _with_includes(included, (*seen, included.label)))
    return _merge(merged, raw)


def _source_of(name: str) -> _Source:
    if name in target_names():
        return _builtin_source(f"{name}.toml")
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise RecipeError(f"--target {name}: no such target file")
        try:
            return _Source(str(path), path.read_text(encoding="utf-8"), path.resolve().parent)
        except (OSError, UnicodeDecodeError) as e:
            raise RecipeError(f"--target {name}: cannot read it ({e})") from None
    raise RecipeError(f"unknown target {name!r} (choose from: {', '.join(target_names())}; or a path to a target "
                      "TOML file)")


def _check_keys(table: Any, known: set[str], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: must be a table")
    unknown = sorted(set(table) - known)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return table


def _integer(table: dict[str, Any], key: str, default: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecipeError(f"{where}: {key} must be a non-negative integer, not {value!r}")
    return value


def _formats(table: Any, label: str, prefix: str, kind: type, schemes_of) -> dict[str, FormatRecipe]:
    """The [<prefix>.<format>] tables: each format's recipes, auto search and portable names."""
    formats = {}
    for fmt, body in _check_keys(table, set(REGISTRY), f"{label} [{prefix}]").items():
        body = _check_keys(body, FORMAT_KEYS, f"{label} [{prefix}.{fmt}]")
        recipes = {}
        for recipe_name, params in _check_keys(body.get("recipes", {}), set(body.get("recipes", {})),
                                               f"{label} [{prefix}.{fmt}.recipes]").items():
            where = f"{label} [{prefix}.{fmt}.recipes.{recipe_name}]"
            params = dict(_check_keys(params, set(params) if isinstance(params, dict) else set(), where))
            thresholds = _thresholds(params.pop("parity", {}), where, kind)
            scheme = params.get("scheme", recipe_name)
            if scheme not in schemes_of(fmt):
                raise RecipeError(f"{where}: {fmt} has no quantization scheme {scheme!r} (its schemes: "
                                  f"{', '.join(schemes_of(fmt))}; a recipe's scheme is its name unless it "
                                  "sets scheme = ...)")
            recipes[recipe_name] = QuantRecipe(recipe_name, params, thresholds)
        auto = None
        if "auto" in body:
            raw_auto = dict(_check_keys(body["auto"], {"candidates", "parity"}, f"{label} [{prefix}.{fmt}.auto]"))
            candidates = tuple(raw_auto.get("candidates", ()))
            unknown = [c for c in candidates if c not in recipes]
            if not candidates or unknown:
                raise RecipeError(f"{label} [{prefix}.{fmt}.auto]: candidates must name recipes of "
                                  f"{fmt} (unknown: {unknown or 'none given'})")
            auto = AutoSearch(candidates, _thresholds(raw_auto.get("parity", {}), f"{label} [{prefix}.{fmt}.auto]",
                                                      kind))
        portable = dict(_check_keys(body.get("portable", {}), set(PORTABLE_NAMES),
                                    f"{label} [{prefix}.{fmt}] portable"))
        bad = {k: v for k, v in portable.items() if v not in recipes}
        if bad:
            raise RecipeError(f"{label} [{prefix}.{fmt}] portable: {bad} names no recipe of {fmt} "
                              f"(its recipes: {', '.join(recipes)})")
        default = body.get("default_recipe")
        if default not in recipes and not (default == AUTO and auto):
            raise RecipeError(f"{label} [{prefix}.{fmt}]: default_recipe {default!r} "
                              f"has no [{prefix}.{fmt}.recipes.<name>] table")
        formats[fmt] = FormatRecipe(fmt, default, recipes, auto, portable)
    return formats


def load_target(name: str) -> TargetRecipe:
    """A built-in target by name, or a target file by path (the same schema; docs/TARGETS.md)."""
    source = _source_of(name)
    label = source.label
    raw = _check_keys(_with_includes(source), TARGET_KEYS - {"include"}, label)
    formats = _formats(raw.get("formats", {}), label, "formats", Thresholds, lambda fmt: REGISTRY[fmt].schemes)
    if not formats:
        raise RecipeError(f"{label}: no [formats.<format>] table (known formats: {', '.join(REGISTRY)})")
    encoder = _check_keys(raw.get("encoder", {}), ENCODER_KEYS, f"{label} [encoder]")
    encoder_formats = _formats(encoder.get("formats", {}), label, "encoder.formats", EncoderThresholds,
                               lambda fmt: REGISTRY[fmt].encoder_schemes)
    bundle = _check_keys(raw.get("bundle", {}), BUNDLE_KEYS, f"{label} [bundle]")
    return TargetRecipe(name=str(raw.get("name", Path(name).stem)), description=str(raw.get("description", "")),
                        max_seq_len=_integer(raw, "max_seq_len", 512, label) or 512, formats=formats,
                        app_project=str(bundle.get("app_project", "")), app_assets=str(bundle.get("app_assets", "")),
                        max_app_bytes=_integer(bundle, "max_app_bytes", 0, f"{label} [bundle]"),
                        sideload=tuple(bundle.get("sideload", ())),
                        max_parameters=_integer(raw, "max_parameters", 0, label), encoder_formats=encoder_formats,
                        encoder_max_seq_len=_integer(encoder, "max_seq_len", 512, f"{label} [encoder]") or 512)
