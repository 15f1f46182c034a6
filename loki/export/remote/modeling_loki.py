"""LokiLM for transformers (remote code written by ``loki export hf``).

The same computation as ``loki.model.Loki``: token embedding (no position embeddings), pre-norm
blocks of RMSNorm -> causal self-attention with ALiBi -> RMSNorm -> SwiGLU MLP, a final RMSNorm
and an untied LM head, no biases anywhere. Attention is PyTorch SDPA with an additive ALiBi bias;
keys and values of earlier positions live in a transformers ``Cache`` so that ``generate()``
decodes one token per step. Self-contained (torch and transformers only) because transformers
copies this file out of the export folder and imports it with ``trust_remote_code=True``.

Weight names follow the Llama layout (``model.layers.N.self_attn.q_proj`` ...), so LoRA recipes
and tools that look for those module names find them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_loki import LokiConfig


@lru_cache(maxsize=8)
def alibi_slopes(n_head: int) -> tuple[float, ...]:
    """Per-head ALiBi slopes (Press et al. 2022): for a power of two ``n`` the geometric sequence
    starting at and stepping by ``2^(-8/n)``; otherwise those of the closest smaller power of two
    ``m`` and every other slope of the ``2m`` sequence for the remaining heads."""

    def geometric(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    m = 2 ** math.floor(math.log2(n_head))
    slopes = geometric(m)
    if m < n_head:
        slopes += geometric(2 * m)[0::2][: n_head - m]
    return tuple(slopes)


def alibi_bias(
    n_head: int, q_len: int, k_len: int, key_mask: torch.Tensor | None, dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    """Additive attention bias (1 or B, nh, q_len, k_len): ``-slope * distance`` where a query may
    attend, the dtype's lowest value elsewhere (future keys, and keys where ``key_mask`` (B, k_len)
    is 0). The queries are the last ``q_len`` of the ``k_len`` positions (a KV cache holds the
    rest). The lowest value rather than -inf keeps the rows of padding queries finite."""
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    distance = (q_pos[:, None] - k_pos[None, :]).float()  # (Tq, Tk), negative above the diagonal
    slopes = torch.tensor(alibi_slopes(n_head), device=device)[:, None, None]  # float32 (nh, 1, 1)
    bias = (-slopes * distance)[None]  # (1, nh, Tq, Tk), built in float32 as in training
    allowed = (distance >= 0)[None, None]  # (1, 1, Tq, Tk)
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, -k_len:].bool()  # (B, 1, Tq, Tk)
    return bias.masked_fill(~allowed, torch.finfo(torch.float32).min).to(dtype)


class LokiAttention(nn.Module):
    def __init__(self, config: LokiConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.dropout
        size = config.hidden_size
        self.q_proj = nn.Linear(size, size, bias=False)
        self.k_proj = nn.Linear(size, size, bias=False)
        self.v_proj = nn.Linear(size, size, bias=False)
        self.o_proj = nn.Linear(size, size, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, past + T, hs)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return F.dropout(self.o_proj(y), p=dropout, training=self.training)


class LokiMLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LokiConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return F.dropout(y, p=self.dropout, training=self.training)


class LokiDecoderLayer(nn.Module):
    def __init__(self, config: LokiConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LokiAttention(config, layer_idx)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LokiMLP(config)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor, cache: Cache | None = None
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), bias, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LokiPreTrainedModel(PreTrainedModel):
    config_class = LokiConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LokiDecoderLayer"]
    _supports_sdpa = True
    _supports_cache_class = True


class LokiModel(LokiPreTrainedModel):
    def __init__(self, config: LokiConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LokiDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """``attention_mask`` (B, past + T) marks real tokens with 1 and padding with 0; ALiBi
        depends only on distances, so left padding leaves the real tokens' outputs unchanged.
        ``position_ids`` are accepted and ignored (ALiBi has no positions)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        cache = cache if cache is not None else past_key_values  # the name before transformers 5.x
        if use_cache is None:
            use_cache = self.config.use_cache
        if self.gradient_checkpointing and self.training:
            use_cache, cache = False, None  # a recomputed layer would write its keys twice
        if use_cache and cache is None:
            cache = DynamicCache()
        if not use_cache:
            cache = None
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None and attention_mask.dim() != 2:
            raise ValueError("LokiLM takes a 2-D padding mask (batch, past + new tokens); the "
                             "causal ALiBi bias is built inside the model")
        bias = alibi_bias(self.config.num_attention_heads, x.size(1), past + x.size(1),
                          attention_mask, x.dtype, x.device)  # (1 or B, nh, T, past + T)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                x = self._gradient_checkpointing_func(layer.__call__, x, bias, None)
            else:
                x = layer(x, bias, cache)
        return _output(BaseModelOutputWithPast, last_hidden_state=self.norm(x), cache=cache)


class LokiForCausalLM(LokiPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: LokiConfig) -> None:
        super().__init__(config)
        self.model = LokiModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        return_dict: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits (B, T, vocab) and, with ``labels`` (B, T), the mean next-token cross-entropy
        (labels are shifted inside, -100 is ignored, as in transformers' causal LMs)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         cache=cache if cache is not None else past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache)
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)  # (B, T, vocab)
        loss = None
        if labels is not None:
            targets = F.pad(labels, (0, 1), value=-100)[:, 1:].to(logits.device)  # next tokens
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                   ignore_index=-100,
                                   reduction="mean" if num_items_in_batch is None else "sum")
            if num_items_in_batch is not None:  # the Trainer's count over accumulated batches
                loss = loss / num_items_in_batch
        cache = _cache_of(out)
        result = _output(CausalLMOutputWithPast, loss=loss, logits=logits, cache=cache)
        return result if return_dict is not False else result.to_tuple()


def _cache_of(output) -> Cache | None:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def _output(cls, cache: Cache | None, **fields):
    """``cls`` with the cache under the field name this transformers version uses (``cache``
    from 5.x, ``past_key_values`` before)."""
    name = "cache" if "cache" in cls.__dataclass_fields__ else "past_key_values"
    return cls(**fields, **{name: cache})
