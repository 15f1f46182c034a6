"""The Loki decoder: a plain ``nn.Module`` that imports only torch and its config.

Token embedding (no position embeddings: ALiBi biases attention by distance instead), pre-norm
blocks of RMSNorm -> causal self-attention -> RMSNorm -> SwiGLU MLP, a final RMSNorm and the LM
head. Because nothing positional is learned, the model runs on sequences longer than
``block_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from loki.attention import alibi_slopes, causal_attention, shared_block_mask, slope_key
from loki.config import LokiConfig
from loki.loss import linear_cross_entropy

__all__ = ["Block", "KVCache", "Loki", "alibi_slopes"]


class KVCache:
    """Pre-allocated keys and values for incremental decoding: one (B, nh, max_len, hs) pair per
    layer and a shared fill position."""

    def __init__(
        self, config: LokiConfig, batch_size: int, max_len: int, device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        shape = (batch_size, config.n_head, max_len, config.head_size)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.pos = 0  # number of positions already written (advanced once per forward)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions, asked for {end}")
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LokiConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.backend = config.attention_backend
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # The slopes twice: a tuple keys the cached SDPA bias without reading the device, and a
        # non-persistent fp32 buffer moves with the module for flash/flex (no copy per call).
        self.slope_key = slope_key(alibi_slopes(config.n_head))
        self.register_buffer("slopes", alibi_slopes(config.n_head), persistent=False)

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        # .to(bfloat16) or .to_empty() must not round or forget the slopes: rebuild them
        super()._apply(fn, recurse)
        self.slopes = torch.tensor(self.slope_key, dtype=torch.float32, device=self.slopes.device)
        return self

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
        block_mask: Any = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        y = causal_attention(q, k, v, self.slopes, self.backend, dropout, self.slope_key,
                             block_mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.proj(y), p=dropout, training=self.training)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, with gate and up fused into one matmul."""

    def __init__(self, config: LokiConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.n_embd, 2 * config.ffn_hidden, bias=False)
        self.down = nn.Linear(config.ffn_hidden, config.n_embd, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, ffn) each
        return F.dropout(self.down(F.silu(gate) * up), p=self.dropout, training=self.training)


class Block(nn.Module):
    def __init__(self, config: LokiConfig) -> None:
        super().__init__()
        self.norm_attn = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
        block_mask: Any = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x), kv_cache, layer, block_mask)
        return x + self.mlp(self.norm_mlp(x))


class Loki(nn.Module):
    def __init__(self, config: LokiConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) everywhere, and init_std / sqrt(2 * n_layer) for the projections
        that write into the residual stream, so its variance does not grow with depth."""
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                is_residual = name.endswith(("attn.proj", "mlp.down"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if is_residual else std)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        return_logits: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab) and, with targets (B, T), the mean
        next-token cross-entropy over targets != -100. ``return_logits=False`` (with targets)
        returns (None, loss) from the chunked head + loss, never holding the full logits."""
        x = self.wte(idx)  # (B, T, C)
        # flex's causal mask, made once for all layers (compiled blocks take it as an input);
        # decoding past a filled cache attends to more keys than queries and runs sdpa
        block_mask = None
        if kv_cache is None or kv_cache.pos == 0:
            dropout = self.config.dropout if self.training else 0.0
            block_mask = shared_block_mask(self.config.attention_backend, x, idx.size(1), dropout)
        for i, block in enumerate(self.blocks):
            x = block(x, kv_cache, i, block_mask)
        if kv_cache is not None:
            kv_cache.pos += idx.size(1)
        x = self.norm(x)
        if targets is not None and not return_logits:
            return None, linear_cross_entropy(x.flatten(0, 1), self.lm_head.weight,
                                              targets.flatten())
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100
            )
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: Sequence[Sequence[int]] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` after ``idx`` (B, T) with a KV cache; returns (B, T + n).

        temperature 0 is greedy. ``stop`` holds token-id sequences: decoding ends early once every
        row has produced one of them; the caller trims each row after its first stop.
        """
        B, T = idx.shape
        param = next(self.parameters())
        cache = KVCache(self.config, B, T + max_new_tokens, idx.device, param.dtype)
        stops = [torch.tensor(s, device=idx.device) for s in (stop or []) if len(s)]
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        out = idx
        logits, _ = self(idx, kv_cache=cache)  # prefill
        for _ in range(max_new_tokens):
            next_id = _sample(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            out = torch.cat([out, next_id], dim=1)
            for s in stops:
                if out.size(1) - T >= len(s):
                    done |= (out[:, -len(s) :] == s).all(dim=1)
            if stops and bool(done.all()):
                break
            logits, _ = self(next_id, kv_cache=cache)
        return out


def _sample(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """logits (B, V) -> next ids (B, 1)."""
    if (top_k is not None and top_k < 1) or (top_p is not None and not 0 < top_p <= 1):
        raise ValueError(f"top_k must be >= 1 and top_p in (0, 1], got {top_k} and {top_p}")
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)
