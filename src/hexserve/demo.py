"""`make demo`: the main job on shipped examples, one step after another, each shown with its command."""

from __future__ import annotations

import shlex
import sys

from hexserve.cli import main as hexserve

STEPS = [
    ("A heterogeneous cluster from a shipped file", "cluster hetero-4"),
    ("Llama-2-70B on one 8xH100 node (HexGen-2's baseline)", "estimate --model llama-2-70b --gpus 8xh100"),
    ("HexGen's case: symmetric TP=8 overflows the 16 GiB A4000s",
     "estimate --model llama-2-70b --cluster hexgen-case --tp 8"),
    ("... while an asymmetric layout, TP (4,2,2) with more layers on the A6000s, fits",
     "estimate --model llama-2-70b --cluster hexgen-case"),
]


def main() -> int:
    for title, command in STEPS:
        print(f"\n=== {title}\n$ hexserve {command}", flush=True)
        code = hexserve(shlex.split(command))
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
