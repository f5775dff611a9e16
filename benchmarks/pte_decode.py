"""Decode and prefill time of .pte files through executorch.runtime (`Session.forward`), 1 thread,
one process, alternating the files, best of N. For A/B checks of one ExecuTorch graph change,
where `slm-export bench` (the LLM runner, millisecond stats) is too coarse on a tiny model:

    python benchmarks/pte_decode.py before/model.pte after/model.pte [--rounds 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pte", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()

    import executorch.extension.pybindings.portable_lib as portable_lib
    import torch

    from exporter.runtimes import executorch as et

    torch.set_num_threads(1)
    portable_lib._unsafe_reset_threadpool(1)
    sessions = {p: et.open_session(p) for p in args.pte}
    prompt = list(range(5, 5 + args.prompt_tokens))
    decode = dict.fromkeys(args.pte, float("inf"))
    prefill = dict.fromkeys(args.pte, float("inf"))
    for round_index in range(args.rounds):
        for path in args.pte if round_index % 2 == 0 else args.pte[::-1]:
            session = sessions[path]
            session.reset()
            start = time.perf_counter()
            token = int(session.forward(prompt).argmax())
            prefilled = time.perf_counter()
            for _ in range(args.new_tokens - 1):
                token = int(session.forward([token]).argmax())
            decode[path] = min(decode[path], (time.perf_counter() - prefilled) / (args.new_tokens - 1))
            prefill[path] = min(prefill[path], prefilled - start)
    for path in args.pte:
        print(f"{path}: decode {decode[path] * 1e3:.4f} ms/token, prefill {prefill[path] * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
