"""From logits to the next token of each sequence: greedy, temperature, top-k, top-p, per-request seeds."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SamplingBatch:
    """Per-row settings of one step's sampling (rows in the order of the logits)."""

    temperatures: list[float]
    top_ks: list[int]
    top_ps: list[float]
    generators: list[torch.Generator | None]


def _filter(logits: torch.Tensor, top_ks: list[int], top_ps: list[float]) -> torch.Tensor:
    vocab = logits.shape[-1]
    if any(0 < k < vocab for k in top_ks):
        ks = torch.tensor([k if 0 < k < vocab else vocab for k in top_ks], device=logits.device)
        sorted_desc = logits.sort(dim=-1, descending=True).values
        kth = sorted_desc.gather(1, (ks - 1).unsqueeze(1))
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if any(p < 1.0 for p in top_ps):
        ps = torch.tensor(top_ps, device=logits.device, dtype=logits.dtype).unsqueeze(1)
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token once the tokens ranked above it already hold top_p of the mass (the first stays).
        drop = probs.cumsum(-1) - probs >= ps
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, order, sorted_logits)
    return logits


def sample(logits: torch.Tensor, batch: SamplingBatch) -> tuple[list[int], list[float]]:
    """Next token of each row and its log-probability under the model (before temperature/filters)."""
    logits = logits.float()
    tokens = logits.argmax(dim=-1)
    rows = [i for i, t in enumerate(batch.temperatures) if t > 0]
    if rows:
        index = torch.tensor(rows, device=logits.device)
        temps = torch.tensor([batch.temperatures[i] for i in rows], device=logits.device).unsqueeze(1)
        scaled = _filter(logits[index] / temps, [batch.top_ks[i] for i in rows], [batch.top_ps[i] for i in rows])
        probs = scaled.softmax(-1)
        for j, i in enumerate(rows):
            # One draw per row with the request's own generator, so a seeded request repeats exactly
            # whatever else shares its batch.
            tokens[i] = torch.multinomial(probs[j], 1, generator=batch.generators[i])[0]
    logprobs = logits.log_softmax(-1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    return tokens.tolist(), logprobs.tolist()
