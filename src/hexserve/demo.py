"""`make demo`: the main job on shipped examples, one step after another, each shown with its command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from hexserve.cli import main as hexserve

STEPS = [
    ("A heterogeneous cluster from a shipped file", "cluster hetero-4"),
    ("Llama-2-70B on one 8xH100 node (HexGen-2's baseline)", "estimate --model llama-2-70b --gpus 8xh100"),
    ("HexGen's case: symmetric TP=8 overflows the 16 GiB A4000s",
     "estimate --model llama-2-70b --cluster hexgen-case --tp 8"),
    ("... so the planner lays it out asymmetrically: stages of different TP degrees and layer counts",
     "plan --model llama-2-70b --cluster hexgen-case"),
    ("Colocated replicas over a whole heterogeneous cluster, written to a plan file",
     "plan --model llama-2-70b --cluster hetero-4 --out out/hetero-4-llama-2-70b.json"),
    ("The embedded default model (SmolLM2-135M-Instruct) answers a chat request on this machine",
     'generate --model smollm2 --chat --max-tokens 32 --prompt "What is the capital of France?"'),
]


def main() -> int:
    Path("out").mkdir(exist_ok=True)
    for title, command in STEPS:
        print(f"\n=== {title}\n$ hexserve {command}", flush=True)
        code = hexserve(shlex.split(command))
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
