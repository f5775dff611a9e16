"""Print the README's N-th set-up command (1: install + export, 2: install + tests), verbatim.

CI runs what this prints, so the README and CI cannot drift apart: the commands are the ```bash
blocks under the README's "## Set-up" heading, in order. Standard library only (it runs before
anything is installed).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def setup_commands(text: str) -> list[str]:
    section = re.search(r"^## Set-up.*?$(.*?)(?=^## )", text, re.M | re.S)
    if section is None:
        raise SystemExit(f"{README}: no '## Set-up' section")
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", section.group(1), re.M | re.S)]


def main() -> None:
    index = int(sys.argv[1])
    commands = setup_commands(README.read_text(encoding="utf-8"))
    if len(commands) != 2:
        raise SystemExit(f"{README}: the Set-up section must hold exactly two bash commands, found {len(commands)}")
    print(commands[index - 1])


if __name__ == "__main__":
    main()
