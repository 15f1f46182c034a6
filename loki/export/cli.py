"""``loki export hf CHECKPOINT --output DIR [--check]``: a checkpoint as a transformers folder.

    loki export hf runs/demo --output runs/demo/hf --check
    python -c "from transformers import AutoModelForCausalLM as M; \\
               M.from_pretrained('runs/demo/hf', trust_remote_code=True)"

CHECKPOINT is a ``.ckpt`` file, a distributed checkpoint folder, or a run folder (its
``checkpoints/last.ckpt``). ``--check`` loads the export back with transformers, compares its
logits with Loki's forward pass on a fixed batch and prints the max abs difference.
"""

from __future__ import annotations

from loki.errors import LokiError

DESCRIPTION = ("Export a Loki checkpoint for other toolkits. hf: a Hugging Face transformers "
               "model folder (loki export hf CHECKPOINT --output DIR [--check]; see "
               "loki export hf --help).")


def build_parser():
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    parser = ArgumentParser(prog="loki export", description=DESCRIPTION, exit_on_error=False)
    hf = ArgumentParser(description="a transformers model folder (remote code, tokenizer.json)",
                        exit_on_error=False)
    hf.add_argument("--config", action=ActionConfigFile)
    hf.add_argument("checkpoint", type=str,
                    help=".ckpt file, distributed checkpoint folder or run folder")
    hf.add_argument("--output", type=str, required=True,
                    help="folder to write (an earlier export there is replaced when done)")
    hf.add_argument("--tokenizer", type=str | None, default=None,
                    help="tokenizer spec (default: the one recorded in the checkpoint)")
    hf.add_argument("--dtype", type=str, default="auto",
                    help="weights dtype: auto (as stored), float32, bfloat16, float16")
    hf.add_argument("--max_shard_size", type=str, default="5GB",
                    help="safetensors files above this size are sharded (with an index): 5GB, "
                         "500MB, 100KB or bytes")
    hf.add_argument("--check", action=ActionYesNo, default=False,
                    help="load the export with transformers and compare logits with Loki's")
    sub = parser.add_subcommands(dest="format")
    sub.add_subcommand("hf", hf, help="Hugging Face transformers (AutoModelForCausalLM)")
    return parser


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ArgumentError

    try:
        cfg = build_parser().parse_args(argv)
    except ArgumentError as err:
        raise LokiError(" ".join(str(err).split())) from None
    from loki.export.hf import export_hf

    args = cfg.hf
    manifest = export_hf(args.checkpoint, args.output, args.tokenizer, args.dtype,
                         args.max_shard_size, args.check)
    print(f"wrote {args.output} ({manifest['parameters']:,} parameters, {manifest['dtype']}, "
          f"from {manifest['consolidated_from'] or manifest['checkpoint']})")
    if "check" in manifest:
        c = manifest["check"]
        print(f"check: max abs logit difference {c['max_abs_logit_diff']:.3g} on a "
              f"{c['batch_shape'][0]}x{c['batch_shape'][1]} batch (float32); tokenizer ids "
              f"{'identical' if c['tokenizer_ids_equal'] else 'DIFFER'}")
