"""Stage 7, bundle: a verified OUT/<target>/ into the demo app, atomically, within a size limit.

The bundle is copied into a staging folder beside the app's asset folder, checked file by file
against its manifest, and only then swapped in with renames; the previous bundle is removed
after the swap. A failed or interrupted run therefore leaves the previous bundle as it was.
Bundles above the target's `max_bytes` are not put into the app (stores limit app size); the
user gets the exact side-load commands the demo apps support instead.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import manifest as manifest_io
from .atomic import exclusive, space_checked, staging_dir, swap_into_place
from .errors import ExportError, InputError
from .recipes import TargetRecipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleResult:
    destination: Path | None  # where the app now reads it; None when it was not bundled
    bytes: int
    sideload_steps: list[str]


def checkout_root() -> Path | None:
    """The source checkout this package runs from, if any (the demo apps live there)."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "exporter").is_dir() else None


def bundle_bytes(bundle: Path) -> int:
    """What the app receives: manifest.json and the files it lists (extras/ stays in OUT/)."""
    return (bundle / manifest_io.MANIFEST).stat().st_size + sum(f.stat().st_size
                                                               for f in manifest_io.bundled_paths(bundle))


def _leave_out_extras(bundle: Path):
    """copytree's ignore: the bundle's top-level extras/ folder (files no app loads)."""
    return lambda folder, names: [manifest_io.EXTRAS_DIR] if Path(folder) == bundle else []


def sideload_steps(target: TargetRecipe, bundle: Path) -> list[str]:
    return [step.format(bundle=bundle.resolve()) for step in target.sideload]


def install(bundle: Path, destination: Path) -> None:
    """Copy a verified bundle to `destination` atomically, checking every file on arrival. The
    bundle's extras/ (files no app loads) stays behind."""
    with exclusive(destination.parent, destination.name):
        _install(bundle, destination)


def _install(bundle: Path, destination: Path) -> None:
    try:
        staging = staging_dir(destination.parent, destination.name)
    except OSError as e:
        raise InputError(f"{destination.parent}: cannot create the app's bundle folder ({e.strerror})") from None
    with space_checked(destination.parent, bundle_bytes(bundle), "the app's bundle copy"):
        try:
            shutil.copytree(bundle, staging, copy_function=shutil.copy2, ignore=_leave_out_extras(bundle))
            problems = manifest_io.check_files(staging, manifest_io.read(staging))
            if problems:
                raise ExportError(f"bundle copy into {destination} is not identical to {bundle}: {problems[0]}")
            swap_into_place(staging, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def bundle_into_app(bundle: Path, target: TargetRecipe, app_dir: Path | None) -> BundleResult:
    """Put the bundle where the target's app reads it, or explain how to side-load it.

    `app_dir` is the app project's root (default: the demo app of this checkout, from the target
    recipe). The bundle goes to `app_dir / target.app_assets`."""
    manifest_io.check_contained(bundle)  # before a byte is copied
    size = bundle_bytes(bundle)
    if app_dir is None:
        root = checkout_root()
        demo = root / target.app_project if root and target.app_project else None
        if demo is None or not demo.is_dir():
            log.info("no demo app to bundle into (pass --app-dir); the bundle is in %s", bundle)
            return BundleResult(None, size, [])
        app_dir = demo
    elif not app_dir.is_dir():
        raise InputError(f"{app_dir}: app directory does not exist (--app-dir)")
    if not target.app_assets:
        raise InputError(f"target {target.name} has no [bundle] app_assets: it does not say where the bundle goes "
                         "inside an app (add it to the target file, or pass --no-bundle)")
    if target.max_app_bytes and size > target.max_app_bytes:
        steps = sideload_steps(target, bundle)
        log.warning("%s: bundle is %.1f MB, above the %.0f MB the %s app ships in its assets; "
                    "side-load it instead:\n  %s", bundle, size / 1e6, target.max_app_bytes / 1e6, target.name,
                    "\n  ".join(steps))
        return BundleResult(None, size, steps)
    destination = app_dir / target.app_assets
    install(bundle, destination)
    return BundleResult(destination, size, [])
