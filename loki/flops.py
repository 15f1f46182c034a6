"""Training FLOPs of a Loki model and the dense peak FLOP/s of the GPUs it runs on.

Convention (the one MFU figures in the PaLM and Chinchilla papers use, made exact for causal
attention):

- Matmul parameters ``N``: every weight that multiplies an activation: per block the fused QKV
  and output projections (4 d^2) and SwiGLU's three matrices (3 d f), plus the LM head (V d),
  tied or not. The embedding is a lookup, norms and activations are elementwise: not counted.
  A forward pass costs 2 N FLOPs per token, backward twice that: **6 N per token**.
- Attention scores and the weighted sum of values: a query at position t (1-based) meets t keys
  under the causal mask, each costing 2 d (QK^T) + 2 d (AV) forward. Averaged over a sequence of
  T tokens that is 2 d (T + 1) per token per layer forward, **6 n_layer d (T + 1)** for training.
  Each allowed (query, key) pair is counted once: the masked upper triangle is not counted
  (even though flash-attn's diagonal tiles do compute some of it), and ALiBi's bias add and the
  softmax are elementwise.

So for ``loki-1.4b`` at T = 2048: N = 1,336,410,112 matmul parameters, 6 N = 8.02 GFLOP and
attention 0.60 GFLOP per token, 8.62 GFLOP per token in all.
"""

from __future__ import annotations

from loki.config import LokiConfig

# Dense (no 2:4 sparsity) tensor-core peaks in FLOP/s from NVIDIA's datasheets. Datasheets print
# sparse figures ("with sparsity") next to dense ones; these are the dense halves. A100 has no
# FP8. Lightning's own table lists 2.0e15 bf16 for the H200, which is the sparse figure.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "a100": {"bf16": 312e12},
    "h100-sxm": {"bf16": 989.4e12, "fp8": 1978.9e12},
    "h100-pcie": {"bf16": 756.0e12, "fp8": 1513.0e12},
    "h100-nvl": {"bf16": 835.5e12, "fp8": 1670.5e12},
    "h200-sxm": {"bf16": 989.4e12, "fp8": 1978.9e12},
    "h200-nvl": {"bf16": 835.5e12, "fp8": 1670.5e12},
}


def matmul_params(config: LokiConfig) -> int:
    """Parameters that take part in a matmul per token (see the module docstring)."""
    d, f = config.n_embd, config.ffn_hidden
    return config.n_layer * (4 * d * d + 3 * d * f) + config.vocab_size * d


def flops_per_token(config: LokiConfig, seq_len: int | None = None, training: bool = True) -> int:
    """FLOPs per token for sequences of ``seq_len`` tokens (default: ``block_size``):
    6 N + 6 n_layer d (T + 1) for training, a third of that for a forward pass."""
    t = seq_len or config.block_size
    forward = 2 * matmul_params(config) + 2 * config.n_layer * config.n_embd * (t + 1)
    return 3 * forward if training else forward


def training_flops(config: LokiConfig, tokens: int, seq_len: int) -> int:
    """FLOPs of forward + backward over ``tokens`` tokens in sequences of ``seq_len``."""
    return tokens * flops_per_token(config, seq_len, training=True)


def forward_flops(config: LokiConfig, tokens: int, seq_len: int) -> int:
    """FLOPs of a forward pass (validation, evaluation) over ``tokens`` tokens."""
    return tokens * flops_per_token(config, seq_len, training=False)


def gpu_family(device_name: str) -> str | None:
    """Map ``torch.cuda.get_device_name()`` to a ``PEAK_FLOPS`` key (None if unknown).

    Examples: "NVIDIA A100-SXM4-80GB" -> a100, "NVIDIA H100 80GB HBM3" -> h100-sxm,
    "NVIDIA H100 PCIe" -> h100-pcie, "NVIDIA H200" -> h200-sxm, "NVIDIA H200 NVL" -> h200-nvl."""
    name = device_name.lower()
    if "a100" in name:
        return "a100"
    for chip in ("h100", "h200"):
        if chip in name:
            if "nvl" in name:
                return f"{chip}-nvl"
            if "pcie" in name:
                return f"{chip}-pcie" if chip == "h100" else None
            return f"{chip}-sxm"
    return None


def peak_flops(device_name: str, compute: str = "bf16") -> float | None:
    """Dense peak FLOP/s of one device for ``compute`` ("bf16" or "fp8"); None when the device
    is not in the table or lacks that format (A100 and FP8, any CPU)."""
    family = gpu_family(device_name)
    return PEAK_FLOPS.get(family, {}).get(compute) if family else None


def mfu(tokens_per_second_per_device: float, flops_token: float, peak: float) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the device's dense peak."""
    return tokens_per_second_per_device * flops_token / peak


def gpu_days(total_flops: float, peak: float, utilization: float) -> float:
    """GPU-days to do ``total_flops`` at ``utilization`` of a ``peak`` FLOP/s device."""
    return total_flops / (peak * utilization) / 86_400
