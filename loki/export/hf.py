"""``loki export hf``: a Loki checkpoint as a Hugging Face transformers model folder.

The folder holds ``config.json`` (``model_type: loki`` and an ``auto_map`` to the remote code),
``configuration_loki.py`` and ``modeling_loki.py`` (``loki/export/remote/``, copied by
transformers' ``save_pretrained``), ``model.safetensors`` (sharded with an index above
``max_shard_size``), ``generation_config.json``, the tokenizer (``tokenizer.json`` +
``tokenizer_config.json``) and ``loki_export.json`` (where it came from, and the check).

Any checkpoint: a Lightning ``.ckpt`` file, a distributed checkpoint folder (consolidated into a
temporary file on the way), or a run folder (its ``checkpoints/last.ckpt``). The export is
written beside the output folder and renamed into place when complete (and checked, with
``check``); an earlier export at the same place is replaced only then.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from loki import atomic
from loki._optional import require
from loki.checkpoint_read import resolve_checkpoint
from loki.config import LokiConfig
from loki.errors import LokiError
from loki.output import check_writable

MANIFEST = "loki_export.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# fp32 on both sides: only the summation order of the split q/k/v and gate/up matmuls differs
# (~1e-6 on the test models, growing with width and depth); a conversion error (a wrong slope, a
# swapped half of a fused matrix) moves logits by O(1), far above this refusal threshold
CHECK_TOLERANCE = 1e-3
SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}  # as transformers counts


# ---------------------------------------------------------------------- checkpoints
@contextmanager
def resolved_checkpoint(path: str | Path) -> Iterator[tuple[Path, str | None]]:
    """(a single-file checkpoint, the distributed folder it was consolidated from or None).

    A run folder resolves to its last checkpoint (``resolve_checkpoint``, as in every tool); a
    distributed checkpoint folder (``.metadata`` inside, as Lightning's ModelParallelStrategy
    writes) is consolidated into a temporary file that lives as long as the context."""
    path = resolve_checkpoint(path)
    if not path.exists():
        raise LokiError(f"checkpoint not found: {path}")
    if path.is_file():
        yield path, None
        return
    from loki.consolidate import consolidate  # a folder here has .metadata (resolve_checkpoint)

    with tempfile.TemporaryDirectory(prefix="loki-export-") as tmp:
        yield consolidate(path, Path(tmp) / "consolidated.ckpt"), str(path)


# ---------------------------------------------------------------------- conversion
def hf_config_dict(config: LokiConfig, tokenizer) -> dict[str, Any]:
    """Fields of the remote ``LokiConfig`` (transformers names) for a Loki config."""
    return dict(
        vocab_size=config.vocab_size, hidden_size=config.n_embd,
        intermediate_size=config.ffn_hidden, num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head, max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps, dropout=config.dropout, initializer_range=config.init_std,
        tie_word_embeddings=config.tie_embeddings, bos_token_id=None,
        eos_token_id=tokenizer.eot_id, pad_token_id=tokenizer.pad_id,
    )


def hf_state_dict(state: dict[str, torch.Tensor], config: LokiConfig) -> dict[str, torch.Tensor]:
    """Loki parameter names -> the export's Llama-style names; the fused q/k/v and gate/up
    matrices are split by rows (``qkv(x).split(C)`` and ``gate_up(x).chunk(2)`` in Loki)."""
    C, F = config.n_embd, config.ffn_hidden
    out = {"model.embed_tokens.weight": state["wte.weight"],
           "model.norm.weight": state["norm.weight"], "lm_head.weight": state["lm_head.weight"]}
    for i in range(config.n_layer):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        q, k, v = state[src + "attn.qkv.weight"].split(C, dim=0)
        gate, up = state[src + "mlp.gate_up.weight"].split(F, dim=0)
        out.update({
            dst + "input_layernorm.weight": state[src + "norm_attn.weight"],
            dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": state[src + "attn.proj.weight"],
            dst + "post_attention_layernorm.weight": state[src + "norm_mlp.weight"],
            dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": state[src + "mlp.down.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def build_hf_model(model, tokenizer, dtype: torch.dtype | None = None):
    """The remote-code ``LokiForCausalLM`` holding ``model``'s (a ``loki.model.Loki``) weights."""
    require("transformers", "eval")
    from loki.export.remote.configuration_loki import LokiConfig as HFConfig
    from loki.export.remote.modeling_loki import LokiForCausalLM

    # save_pretrained copies a registered class's module (and its relative imports) into the
    # folder and writes auto_map into config.json
    HFConfig.register_for_auto_class()
    LokiForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    hf_config = HFConfig(**hf_config_dict(model.config, tokenizer))
    state = hf_state_dict(model.state_dict(), model.config)
    with torch.device("meta"):  # no random init of weights that are overwritten next
        hf_model = LokiForCausalLM(hf_config)
    hf_model.load_state_dict(state, strict=True, assign=True)
    if hf_config.tie_word_embeddings:
        hf_model.lm_head.weight = hf_model.model.embed_tokens.weight
    if dtype is not None:
        hf_model = hf_model.to(dtype)
    hf_config.dtype = next(hf_model.parameters()).dtype
    hf_model.generation_config = require("transformers", "eval").GenerationConfig(
        bos_token_id=None, eos_token_id=tokenizer.eot_id, pad_token_id=tokenizer.pad_id)
    return hf_model.eval()


# ---------------------------------------------------------------------- export
def _check_output(output: Path) -> None:
    """Refuse an output that is a file, or a non-empty folder that is not an earlier export
    (it would be replaced)."""
    if output.is_file():
        raise LokiError(f"output {output} is a file; give a folder for the export")
    check_writable(output.parent, f"--output {output}: its parent folder")  # .partial goes there
    if output.is_dir() and any(output.iterdir()):
        config = output / "config.json"
        try:
            is_export = json.loads(config.read_text()).get("model_type") == "loki"
        except (OSError, ValueError):
            is_export = False
        if not is_export:
            raise LokiError(f"output {output} is a non-empty folder that is not a Loki export; "
                            "give a new or empty folder (an earlier export there is replaced)")


def parse_shard_size(value: str | int) -> int:
    """Bytes in ``5GB``, ``500MB``, ``100KB`` (powers of 1000, as transformers counts) or a plain
    number of bytes; anything else is a LokiError before a checkpoint is read."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]B)?\s*", str(value), re.IGNORECASE)
    size = int(float(m[1]) * SIZE_UNITS[m[2].upper()] if m[2] else float(m[1])) if m else 0
    if size < 1:
        raise LokiError(f"--max_shard_size {value!r}: give a size such as 5GB, 500MB or 100KB "
                        "(or a number of bytes)")
    return size


def export_hf(checkpoint: str | Path, output: str | Path, tokenizer: str | None = None,
              dtype: str = "auto", max_shard_size: str | int = "5GB", check: bool = False,
              tolerance: float = CHECK_TOLERANCE) -> dict[str, Any]:
    """Write the export folder; returns its manifest (with the check's figures when run)."""
    from loki.eval.loading import check_tokenizer
    from loki.module import load_model
    from loki.tokenizer import LokiTokenizer

    output = Path(output)
    _check_output(output)
    if dtype != "auto" and dtype not in DTYPES:
        raise LokiError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
    shard_bytes = parse_shard_size(max_shard_size)
    from loki.console import transformers_without_torchao

    transformers_without_torchao()  # no CUDA-kernel load failures printed: the export needs none
    transformers = require("transformers", "eval")
    checkpoint = resolve_checkpoint(checkpoint)  # recorded as taken, not as given
    with resolved_checkpoint(checkpoint) as (ckpt, distributed):
        model, config, hparams = load_model(ckpt)
        tokens_seen = _tokens_seen(ckpt)
    spec = tokenizer or hparams.get("tokenizer")
    if not spec:
        raise LokiError(f"checkpoint {checkpoint} records no tokenizer; pass --tokenizer")
    tok = LokiTokenizer.from_spec(spec)
    check_tokenizer(tok, config, dict(hparams), f"checkpoint {checkpoint}")

    hf_model = build_hf_model(model, tok, DTYPES.get(dtype))
    manifest: dict[str, Any] = {
        "checkpoint": str(checkpoint), "consolidated_from": distributed,
        "tokenizer": str(spec), "vocab_hash": tok.vocab_hash, "tokens_seen": tokens_seen,
        "dtype": str(hf_model.dtype).removeprefix("torch."), "loki_config": config.to_dict(),
        "parameters": model.num_params(), "transformers_version": transformers.__version__,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    # staged in a folder of this run's own: a folder this run did not make is never removed (a
    # kill leaves <output>.partial-XXXXXXXX behind, to remove by hand)
    partial = atomic.temp_dir_beside(output, "partial")
    try:
        hf_model.save_pretrained(partial, max_shard_size=shard_bytes)
        atomic.give_usual_mode(partial.glob("*.safetensors"))
        from loki.export.hf_tokenizer import save_tokenizer

        save_tokenizer(tok, partial)
        if check:
            manifest["check"] = check_export(partial, model, tok)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if check and manifest["check"]["max_abs_logit_diff"] > tolerance:
            raise LokiError(
                f"the export's logits differ from Loki's by "
                f"{manifest['check']['max_abs_logit_diff']:.3g} (> {tolerance:g}); "
                f"the export was not written to {output}")
        _replace(partial, output)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return manifest


def _tokens_seen(ckpt: Path) -> int | None:
    raw = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)  # no tensor read
    return (raw.get("loki") or {}).get("tokens_seen")


def _replace(new: Path, output: Path) -> None:
    """Move the complete ``new`` folder to ``output``; an earlier export there goes only after,
    by way of a folder of this call's own (a rename onto an empty folder replaces it)."""
    if not output.exists():
        os.replace(new, output)
        return
    old = atomic.temp_dir_beside(output, "old")
    os.replace(output, old)
    try:
        os.replace(new, output)
    except OSError:
        os.replace(old, output)  # the earlier export goes back
        raise
    shutil.rmtree(old)


# ---------------------------------------------------------------------- check
def fixed_batch(tokenizer, vocab_size: int, length: int) -> torch.Tensor:
    """(2, length) ids: a sentence with code, digits and Unicode, and seeded random ids."""
    text = ("The history of the Automatic Computing Engine: def f(x):\n    return x ** 2  # 1912 "
            "— naïve café, 東京, emoji 🙂.\n\n") * 8
    ids = tokenizer.encode(text)[:length]
    ids += [tokenizer.eot_id] * (length - len(ids))
    rand = torch.randint(0, vocab_size, (length,), generator=torch.Generator().manual_seed(0))
    return torch.stack([torch.tensor(ids), rand])


def check_export(folder: str | Path, model, tokenizer, length: int | None = None
                 ) -> dict[str, Any]:
    """Load ``folder`` with transformers (``trust_remote_code``) and compare its logits with
    ``model`` (a ``loki.model.Loki``) on a fixed batch, both in float32 with the export's
    weights (a bf16 export is compared with the Loki model rounded to bf16). Also compares the
    exported tokenizer's ids with ``tokenizer``'s on the batch's text."""
    transformers = require("transformers", "eval")
    folder = Path(folder)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        folder, trust_remote_code=True, dtype=torch.float32).eval()
    stored = DTYPES.get(json.loads((folder / "config.json").read_text()).get("dtype"),
                        torch.float32)
    reference = _copy_as(model, stored)
    length = length or min(model.config.block_size, 64)
    batch = fixed_batch(tokenizer, model.config.vocab_size, length)
    with torch.no_grad():
        ours, _ = reference(batch)
        theirs = hf(input_ids=batch).logits
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    text = tokenizer.decode(batch[0].tolist())
    same_ids = hf_tok(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(
        text, allowed_special="all")
    return {"max_abs_logit_diff": float((ours.float() - theirs.float()).abs().max()),
            "batch_shape": list(batch.shape), "tokenizer_ids_equal": bool(same_ids)}


def _copy_as(model, dtype: torch.dtype):
    """``model`` in float32 after rounding its weights to ``dtype`` (a copy when that changes
    anything; the caller's model is left as it is)."""
    if dtype == torch.float32 and next(model.parameters()).dtype == torch.float32:
        return model.eval()
    import copy

    return copy.deepcopy(model).to(dtype).float().eval()
