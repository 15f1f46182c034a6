"""Configuration of a LokiLM decoder for transformers (remote code written by ``loki export hf``).

The fields are ``loki.config.LokiConfig`` under the names transformers' tooling reads
(``hidden_size``, ``num_hidden_layers``, ...). It imports transformers only, so it works wherever
the export folder is copied.
"""

from __future__ import annotations

from transformers import PretrainedConfig


class LokiConfig(PretrainedConfig):
    """A decoder with ALiBi attention (no position embeddings), RMSNorm, SwiGLU, no biases."""

    model_type = "loki"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 2048,
        intermediate_size: int = 5888,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 32,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-5,
        dropout: float = 0.0,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs,
    ) -> None:
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by "
                             f"num_attention_heads ({num_attention_heads})")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads  # plain multi-head attention
        self.head_dim = hidden_size // num_attention_heads
        # ALiBi has no learned positions: this is the training length, not a limit
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.dropout = dropout  # attention probabilities and residual branches, as in training
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        # passed up, not set here: older transformers versions set these in the base __init__
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id, tie_word_embeddings=tie_word_embeddings,
                         **kwargs)
