"""``loki fit|validate|test|predict``: LightningCLI over ``LokiLM`` and ``LokiDataModule``."""

from __future__ import annotations

from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from loki.data import LokiDataModule
from loki.errors import LokiError
from loki.module import LokiLM


class LokiCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        try:
            super().__init__(
                LokiLM,
                LokiDataModule,
                args=args,
                run=run,
                auto_configure_optimizers=False,  # LokiLM takes its optimizer as an argument
                save_config_kwargs={"overwrite": True},
            )
        except ArgumentError as err:
            # jsonargparse's message names the key or value at fault; keep it to one line.
            raise LokiError(" ".join(str(err).split())) from None

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The tokenizer decides the vocabulary; the model follows the data, never the reverse.
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.tokenizer_spec", "model.tokenizer", apply_on="instantiate")
