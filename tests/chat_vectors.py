"""The chat vectors both apps' unit tests read: the manifest chat section slm-export writes for
each test template (tests/helpers.py CHAT_STYLES: ChatML as SmolLM2 ships it, Llama 3, Gemma).

`python tests/chat_vectors.py` rewrites the committed copies (FIXTURES); test_chat.py fails when
they differ from what the exporter writes now, so the apps are tested against real output.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from helpers import CHAT_STYLES, add_chat_template, save_random_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = (REPO / "android-demo/app/src/coreTest/resources/chat_vectors.json",
            REPO / "ios-demo/SLMDemoTests/Fixtures/chat_vectors.json")
CONFIG = {"model_type": "llama", "vocab_size": 320, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


def chat_sections(workdir: Path) -> str:
    """{style: manifest chat section} as the fixture's text."""
    from exporter.checkpoint import load_checkpoint

    sections = {}
    for style in sorted(CHAT_STYLES):
        folder = workdir / style
        save_random_checkpoint(folder, CONFIG, tokenizer_vocab=312)
        add_chat_template(folder, style)
        sections[style] = load_checkpoint(folder).chat.to_manifest()
    return json.dumps({"about": "written by tests/chat_vectors.py: slm-export's manifest chat section per test "
                                "template", "styles": sections}, indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        text = chat_sections(Path(tmp))
    for path in FIXTURES:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(path)
