"""Model configuration: one dataclass, named sizes, and the checks that reject bad combinations.

This module imports nothing heavy so that configs can be read and checked without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

AttentionBackend = Literal["auto", "flash", "flex", "flex-flash", "sdpa", "eager"]
ATTENTION_BACKENDS: tuple[str, ...] = get_args(AttentionBackend)


@dataclass
class LokiConfig:
    """Shape and initialization of a Loki decoder."""

    n_layer: int = 2
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block (ALiBi gives each head its own slope)."""
    n_embd: int = 64
    """Hidden size."""
    vocab_size: int = 512
    """Rows of the token embedding and LM head; must match the tokenizer."""
    block_size: int = 128
    """Training sequence length. ALiBi has no learned positions, so inference may go longer."""
    ffn_hidden: int | None = None
    """SwiGLU inner width; ``None`` picks 8/3 * n_embd rounded up to a multiple of 64."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = False
    """Share the token embedding with the LM head."""
    attention_backend: AttentionBackend = "auto"
    """flash (flash-attn, CUDA), flex (compiled FlexAttention, ALiBi as a score_mod), flex-flash
    (the same on FlashAttention-4's CuTe kernels: flash-attn-4, Hopper or newer), sdpa (PyTorch
    SDPA with an ALiBi bias), eager (reference); auto: flash, else flex on CUDA, else sdpa."""
    dropout: float = 0.0
    """Dropout on attention probabilities and residual branches (0 for pre-training)."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections get init_std / sqrt(2 * n_layer)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "vocab_size", "block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LokiConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"LokiConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.ffn_hidden is None:
            self.ffn_hidden = _round_up(8 * self.n_embd // 3, 64)
        if self.ffn_hidden <= 0:
            raise ValueError(f"LokiConfig.ffn_hidden must be positive, got {self.ffn_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LokiConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(
                f"LokiConfig.attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}, "
                f"got {self.attention_backend!r}"
            )

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def num_params(self, include_embedding: bool = True) -> int:
        """Parameter count from the shape alone (matches ``Loki(config)``; checked in tests)."""
        d, f = self.n_embd, self.ffn_hidden
        per_block = 4 * d * d + 3 * d * f + 2 * d  # qkv + out proj, SwiGLU (3 matrices), 2 norms
        n = self.n_layer * per_block + d  # + final norm
        if include_embedding:
            n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        elif not self.tie_embeddings:
            n += self.vocab_size * d  # the LM head is a weight matrix like any other
        return n

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> LokiConfig:
        """A named size (see ``NAMED_CONFIGS``), with field overrides."""
        if name not in NAMED_CONFIGS:
            raise ValueError(
                f"unknown config name {name!r}; choose one of: {', '.join(NAMED_CONFIGS)}"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown LokiConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**{**NAMED_CONFIGS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Unit tests: a forward/backward in milliseconds on a CPU.
    "tiny": dict(n_layer=2, n_head=4, n_embd=64, vocab_size=512, block_size=64, ffn_hidden=192),
    # The CPU demo: ~7M parameters with an 8k vocabulary, minutes per epoch of the demo corpus.
    "small": dict(n_layer=4, n_head=8, n_embd=256, vocab_size=8192, block_size=256, ffn_hidden=704),
    # The paper's model. 24 layers, 32 heads, hidden 2048, vocabulary 32,000, context 2048.
    # The paper gives neither the SwiGLU width nor tying; we untie the embeddings and choose
    # ffn_hidden = 5888 (46 * 128, 2.875 * d) so that the total lands on 1.40B:
    #   per block : attention 4 * 2048^2           = 16,777,216
    #               SwiGLU    3 * 2048 * 5888      = 36,175,872
    #               2 RMSNorm 2 * 2048             =      4,096
    #               block total                    = 52,957,184
    #   24 blocks                                  = 1,270,972,416
    #   embedding + untied LM head 2 * 32000 * 2048 =   131,072,000
    #   final RMSNorm                              =          2,048
    #   total                                      = 1,402,046,464  (1.402B, +0.15%)
    # Llama's 8/3 * d rounded to 5632 would give 1.364B (-2.6%), outside the paper's 1.4B.
    "loki-1.4b": dict(
        n_layer=24, n_head=32, n_embd=2048, vocab_size=32_000, block_size=2048, ffn_hidden=5888
    ),
}
