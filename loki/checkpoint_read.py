"""What a checkpoint file is, told in one line before a tool spends minutes on it.

The tools (``generate``, ``probe``, ``compare``, ``export``, ``consolidate``) and
``loki.module.load_model`` read Lightning checkpoints of a ``LokiLM``: a file, or a distributed
checkpoint folder (``*.distcp`` shards and ``meta.pt``, see ``check_distributed``), or a run folder
for its ``checkpoints/last.ckpt`` (``resolve_checkpoint``, the one place that says so). Anything else
given in their place (a transformers export, a bare state dict, a checkpoint of another model,
one that does not record the model's shape) is a ``LokiError`` naming the file and what it is
not, instead of a ``KeyError`` or a size mismatch after the weights were read. Nothing here guesses a config: a checkpoint that records none is
refused, since a guessed shape only fails later, further from the cause.

``inspect_checkpoint`` makes the same checks without reading the weights (``torch.load(mmap=True)``
reads the pickled structure and the tensor shapes only), so ``compare`` can check every
checkpoint of both sides before it evaluates one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from loki.config import LokiConfig
from loki.errors import LokiError

HF_LOAD = "AutoModelForCausalLM.from_pretrained('{folder}', trust_remote_code=True)"
LIGHTNING_META = "meta.pt"  # the non-tensor part of a Lightning distributed checkpoint


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and then the JSON header."""
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(10)
    except OSError:
        return False
    return len(head) == 10 and head[8:10] == b'{"'


def hf_export_hint(path: str | Path) -> str | None:
    """What to say when ``path`` is a transformers model (a folder with ``config.json``, or a
    ``.safetensors`` weights file) given where a Lightning checkpoint belongs; else None."""
    path = Path(path)
    if path.is_dir():
        folder = path
        if not (folder / "config.json").is_file():
            return None
    elif path.is_file() and _is_safetensors(path):
        folder = path.parent
    else:
        return None
    hint = (f"{path} is a Hugging Face transformers model, not a Lightning checkpoint; load it "
            f"with transformers: {HF_LOAD.format(folder=folder)}")
    try:
        source = json.loads((folder / "loki_export.json").read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        source = None
    if source:
        hint += (f"; loki's tools read the checkpoint it was exported from (its "
                 f"loki_export.json names {source})")
    return hint


RUN_CHECKPOINTS = ("checkpoints/last.ckpt", "last.ckpt")  # a run folder's checkpoint, in order


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint ``path`` stands for, the same way in every tool: a file or a distributed
    checkpoint folder (``.metadata`` inside) as given; a run folder (``runs/demo``) as its last
    checkpoint, ``checkpoints/last.ckpt`` (or ``last.ckpt`` in a checkpoints folder), with a line
    on stderr saying which it took. Any other folder is a one-line LokiError."""
    path = Path(path)
    if not path.is_dir() or (path / ".metadata").is_file():
        return path
    for name in RUN_CHECKPOINTS:
        if (path / name).exists():
            print(f"{path} is a run folder: using its checkpoint {path / name}", file=sys.stderr)
            return path / name
    raise LokiError(hf_export_hint(path) or (
        f"{path} is a folder but neither a distributed checkpoint (no .metadata inside) nor a "
        f"run folder (no {RUN_CHECKPOINTS[0]} inside); pass a .ckpt file such as "
        f"runs/<run>/{RUN_CHECKPOINTS[0]}"))


def one_line_reason(err: BaseException, limit: int = 300) -> str:
    """The gist of a library error: its last non-empty line (torch's distributed checkpoint
    errors carry a traceback per rank in their message), shortened."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_checkpoint(path: str | Path, map_location: str = "cpu", mmap: bool = False
                    ) -> dict[str, Any]:
    """A Lightning checkpoint file's contents; with ``mmap`` the tensors stay on disk until
    touched. LokiError when the file is not a readable torch file with a ``state_dict``."""
    path = Path(path)
    if not path.exists():
        raise LokiError(f"checkpoint not found: {path}")
    hint = hf_export_hint(path)
    if hint:
        raise LokiError(hint)
    try:
        ckpt = _torch_load(path, map_location, mmap)
    except Exception as err:  # a truncated or foreign file
        raise LokiError(f"cannot read checkpoint {path}: {one_line_reason(err)}") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise LokiError(f"{path} is not a Lightning checkpoint (a torch file without a "
                        "state_dict); pass a .ckpt that loki fit saved")
    return ckpt


def _torch_load(path: Path, map_location: str, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location=map_location, weights_only=False, mmap=True)
        except Exception:
            pass  # a file in torch's old (pre-zip) format cannot be mapped: read it whole
    return torch.load(path, map_location=map_location, weights_only=False)


def checkpoint_config(ckpt: dict[str, Any], path: str | Path) -> LokiConfig:
    """The model config a checkpoint records: ``loki.config`` (what ``LokiLM`` saves), else its
    hyper-parameters (``config``, ``vocab_size``, ``config_overrides``)."""
    from loki.module import resolve_config

    loki = ckpt.get("loki") if isinstance(ckpt.get("loki"), dict) else {}
    hparams = ckpt.get("hyper_parameters") or {}
    try:
        if isinstance(loki.get("config"), dict):
            return LokiConfig(**loki["config"])
        if hparams.get("config") is not None:
            return resolve_config(hparams["config"], hparams.get("vocab_size"),
                                  hparams.get("config_overrides"))
    except (TypeError, ValueError) as err:
        raise LokiError(f"checkpoint {path} records a model config that cannot be built: "
                        f"{err}") from None
    raise LokiError(f"checkpoint {path} records no model config (neither loki.config nor "
                    "hyper_parameters.config), so the model's shape is unknown; pass a "
                    "checkpoint that loki fit saved")


def loki_state_dict(ckpt: dict[str, Any], model: torch.nn.Module, path: str | Path
                    ) -> dict[str, torch.Tensor]:
    """The ``Loki`` weights of a checkpoint (its ``model.*`` keys, prefix removed), checked
    against the names and shapes of ``model`` (a ``Loki``, possibly on the meta device)."""
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    if not state:
        raise LokiError(f"{path} holds no Loki weights (no model.* keys in its state_dict); pass "
                        "a checkpoint of a LokiLM")
    expected = {k: v.shape for k, v in model.state_dict().items()}
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k])})"
             for k in expected if k in state and state[k].shape != expected[k]]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            problems.append(f"{what}: {', '.join(keys[:3])}" + (
                f" and {len(keys) - 3} more" if len(keys) > 3 else ""))
    if problems:
        raise LokiError(f"{path} does not hold the weights of the Loki model its config describes "
                        f"({'; '.join(problems)}); pass a checkpoint of a LokiLM")
    return state


def is_complete_folder(path: Path) -> bool:
    """A distributed checkpoint folder holds its ``.metadata`` index and Lightning's ``meta.pt``
    (written last of all, by rank 0, once every rank's shards are on disk)."""
    return (path / ".metadata").is_file() and (path / LIGHTNING_META).is_file()


def check_distributed(folder: str | Path) -> dict[str, Any]:
    """The ``meta.pt`` of a Lightning distributed checkpoint folder (everything but the tensors:
    the hyper-parameters, the model config), or a one-line LokiError saying what ``folder`` is.

    A folder without ``meta.pt`` is refused: its weights alone do not say which model they are,
    and a consolidated file without the hyper-parameters cannot be loaded."""
    src = Path(folder)
    if not src.exists():
        raise LokiError(f"checkpoint folder not found: {src}")
    if not (src.is_dir() and (src / ".metadata").is_file()):
        raise LokiError(hf_export_hint(src)
                        or f"{src} is not a distributed checkpoint folder (no .metadata inside)")
    meta_path = src / LIGHTNING_META
    if not meta_path.is_file():
        raise LokiError(f"{src} has no {LIGHTNING_META}, the part of a Lightning distributed "
                        "checkpoint that records the model's config and hyper-parameters; copy "
                        f"the folder again with its {LIGHTNING_META}")
    try:
        meta = torch.load(meta_path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise LokiError(f"cannot read {meta_path}: {one_line_reason(err)}") from err
    if not isinstance(meta, dict):
        raise LokiError(f"{meta_path} is not a Lightning checkpoint's {LIGHTNING_META} (not a dict)")
    checkpoint_config(meta, src)  # refuse now what load_model would refuse after the merge
    return meta


def inspect_checkpoint(path: str | Path) -> tuple[LokiConfig, dict[str, Any]]:
    """(config, hyper-parameters) of a checkpoint file, distributed checkpoint folder or run
    folder (``resolve_checkpoint``), checked as ``load_model`` checks them, without reading the
    weights."""
    from loki.model import Loki

    path = resolve_checkpoint(path)
    if path.is_dir():
        meta = check_distributed(path)
        return checkpoint_config(meta, path), dict(meta.get("hyper_parameters") or {})
    ckpt = read_checkpoint(path, mmap=True)
    config = checkpoint_config(ckpt, path)
    with torch.device("meta"):  # names and shapes only: no memory, no init
        loki_state_dict(ckpt, Loki(config), path)
    return config, dict(ckpt.get("hyper_parameters") or {})
