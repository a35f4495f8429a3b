"""Synthetic prompts of a given token count, without the server's tokenizer.

Each prompt is a random sequence of very common English words, each written with a leading space
(" the", " of", " and", ...): in byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2, Qwen2) and in
SentencePiece ones ("▁the") each such word is one token, and BPE merges do not join two of them, so n
words come to about n tokens (a BOS token may add one). The words are drawn at random per request so
that servers with prefix caching do not see one shared prompt. The client checks the count against
`usage.prompt_tokens` in each response and reports the mean difference.
"""

from __future__ import annotations

import random

WORDS = ("the of and to in is it that for on with as at by from this be or are was an not but have all we "
         "can more one will").split()


def synthetic_prompt(num_tokens: int, rng: random.Random) -> str:
    # No leading word without a space: the first word would tokenize differently from the rest.
    return "".join(" " + rng.choice(WORDS) for _ in range(num_tokens))
