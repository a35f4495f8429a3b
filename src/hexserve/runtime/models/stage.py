"""What every model class shares: it is built whole or as one pipeline stage of a plan, and runs as
embed (first stage) -> its layers -> final norm (last stage); logits come from `compute_logits`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.layers.attention import AttentionMetadata
from hexserve.runtime.layers.embedding import Embedding
from hexserve.runtime.parallel import Shard


class StageModel(nn.Module):
    embedding_name = ""  # checkpoint name of the token embedding (a tied LM head reads it too)

    def __init__(self, cfg: ModelConfig, shard: Shard):
        super().__init__()
        self.config, self.shard = cfg, shard
        self.aliases: dict[str, str] = {}  # checkpoint name -> our parameter name, beyond the obvious

    def build_layers(self, make: Callable[[], nn.Module]) -> nn.ModuleDict:
        """The stage's decoder layers, keyed by their index in the whole model (checkpoint names match)."""
        return nn.ModuleDict({str(i): make() for i in self.shard.layer_range(self.config.spec.num_layers)})

    def tie_head(self, embedding: Embedding | None) -> None:
        """Tied embeddings: share the embedding's weight when this stage has it, else read the LM head
        from the embedding's checkpoint tensor."""
        if not self.config.spec.tie_embeddings:
            return
        if embedding is not None:
            self.lm_head.tie(embedding)
        else:
            self.aliases[self.embedding_name] = "lm_head.weight"

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The stage's output for every token: final hidden states on the last stage, else the hidden
        states the next stage takes (`hidden` is what the previous stage sent; None on the first)."""
        x = self.embed(input_ids, positions) if hidden is None else hidden
        x = self.run_layers(x, positions, meta)
        return self.finish(x) if self.shard.is_last else x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        return self.lm_head(hidden)

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def run_layers(self, x: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
