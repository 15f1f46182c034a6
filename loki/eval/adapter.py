"""lm-eval model type ``"loki"``: a Loki checkpoint and its tokenizer behind lm-eval's ``LM`` API.

Importing this module registers the model with lm-eval's registry. lm-eval 0.4.13 does not scan
entry points for models, so ``lm_eval --model loki`` works once this import has happened: through
``python -m loki.eval`` (lm-eval's own CLI with the model registered), ``loki eval``, or the
opt-in startup hook ``loki.eval.plugin`` (see that module).

Model args (``--model_args checkpoint=...,tokenizer=...``): ``checkpoint`` (a Lightning ``.ckpt``),
``tokenizer`` (spec; default: the one recorded in the checkpoint), ``batch_size``, ``device``,
``dtype`` (auto|float32|bfloat16|float16), ``max_length`` (tokens the model sees; default the
training ``block_size``; ALiBi has no learned positions, so a larger value is allowed and scores
longer contexts instead of cutting them), ``max_gen_toks``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from loki._optional import require
from loki.errors import LokiError
from loki.eval.generate import generate_with_stops
from loki.eval.loading import EvalModel, load_for_eval

_lm_model = require("lm_eval.api.model", "eval")
_registry = require("lm_eval.api.registry", "eval")
_lm_utils = require("lm_eval.utils", "eval")

DEFAULT_MAX_GEN_TOKS = 256


class LokiEvalLM(_lm_model.TemplateLM):
    """Scores and generates with a ``Loki`` model; one process, one device."""

    def __init__(
        self,
        checkpoint: str | None = None,
        tokenizer: str | None = None,
        batch_size: int | str = 8,
        device: str | None = None,
        dtype: str = "auto",
        max_length: int | None = None,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        eval_model: EvalModel | None = None,
        **unused: Any,
    ) -> None:
        super().__init__()
        if eval_model is None:
            if not checkpoint:
                raise LokiError("the loki model needs --model_args checkpoint=<path.ckpt>")
            eval_model = load_for_eval(checkpoint, tokenizer, device, dtype)
        self.eval_model = eval_model
        self.model = eval_model.model
        self.loki_tokenizer = eval_model.tokenizer
        self._device = next(self.model.parameters()).device
        self.batch_size = _batch_size(batch_size)
        self.max_length = int(max_length or eval_model.config.block_size)
        self.max_gen_toks = int(max_gen_toks)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any],
                            additional_config: dict[str, Any] | None = None) -> LokiEvalLM:
        """lm-eval's CLI passes its own ``--batch_size``/``--device`` next to ``--model_args``;
        an explicit model arg wins instead of clashing."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        if str(extra.get("device", "")).startswith("cuda") and not torch.cuda.is_available():
            extra.pop("device")  # lm-eval's CLI default, not the user's choice: pick by itself
        return cls(**{**extra, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str,
                               additional_config: dict[str, Any] | None = None) -> LokiEvalLM:
        return cls.create_from_arg_obj(_lm_utils.simple_parse_args_string(arg_string),
                                       additional_config)

    @classmethod
    def from_model(cls, model, tokenizer, batch_size: int = 8, **kwargs: Any) -> LokiEvalLM:
        """Wrap an in-memory model (the training callback, ``loki compare``) without a file."""
        em = EvalModel(model.eval(), model.config, tokenizer, "<in memory>", "<in memory>")
        return cls(eval_model=em, batch_size=batch_size, **kwargs)

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self.loki_tokenizer.eot_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        return self.loki_tokenizer.encode(string)

    def tok_decode(self, tokens: Iterable[int]) -> str:
        return self.loki_tokenizer.decode(tokens)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests: Sequence[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False,
        **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        """Sum of continuation log-probs and whether greedy decoding would produce it.

        Longest first, so the first batch shows whether memory suffices and padding stays small.
        The context is cut from the left to leave ``max_length`` inputs.
        """
        windows = [_window(ctx, cont, self.max_length) for _, ctx, cont in requests]
        order = sorted(range(len(requests)), key=lambda i: -len(windows[i][0]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm,
                          desc="loki loglikelihood"):
            batch = order[start:start + self.batch_size]
            width = len(windows[batch[0]][0])
            inp = torch.full((len(batch), width), self.eot_token_id, dtype=torch.long)
            for row, i in enumerate(batch):
                tokens = windows[i][0]
                inp[row, : len(tokens)] = torch.tensor(tokens)  # right padding: causal, unseen
            logits, _ = self.model(inp.to(self._device))  # (b, width, V)
            for row, i in enumerate(batch):
                tokens, n_cont = windows[i]
                cont = torch.tensor(requests[i][2][-n_cont:], device=self._device)
                # the logit at position p predicts token p + 1; normalize only those rows
                lp = F.log_softmax(
                    logits[row, len(tokens) - n_cont : len(tokens)].float(), dim=-1)  # (n_cont, V)
                score = float(lp.gather(-1, cont[:, None]).sum())
                greedy = bool((lp.argmax(dim=-1) == cont).all())
                results[i] = (score, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], (score, greedy))
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in disjoint ``max_length`` windows (each predicted
        token counted once), the first window conditioned on the end-of-text token."""
        out = []
        for req in requests:
            tokens = self.tok_encode(req.args[0])
            windows = [
                (None, ctx, cont) for ctx, cont in map(
                    _lm_utils.make_disjoint_window,
                    _lm_utils.get_rolling_token_windows(
                        token_list=tokens, prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length, context_len=1))
            ]
            score = sum(s for s, _ in self._loglikelihood_tokens(windows, disable_tqdm=True))
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), score)
            out.append(score)
        return out

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, with ``do_sample``) continuations cut at the first stop string.

        Requests with the same settings and context length share a batch and a KV cache (the
        model has no padding mask, so ragged batches would attend to padding)."""
        prepared = []
        for req in requests:
            context, gen_kwargs = req.args
            kw = dict(gen_kwargs or {})
            until = kw.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            eot_text = self.tok_decode([self.eot_token_id])
            if eot_text not in until:
                until.append(eot_text)
            max_new = int(kw.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kw.pop("temperature", 0.0))
            if not kw.pop("do_sample", False):
                temperature = 0.0
            top_p, top_k = kw.pop("top_p", None), kw.pop("top_k", None)
            ctx = self.tok_encode(context)[-max(1, self.max_length - max_new):]
            prepared.append((ctx, tuple(until), max_new, temperature, top_k, top_p))
        groups: dict[tuple, list[int]] = {}
        for i, (ctx, *settings) in enumerate(prepared):
            groups.setdefault((len(ctx), *settings), []).append(i)
        results: list[str | None] = [None] * len(requests)
        for key, idx in tqdm(list(groups.items()), disable=disable_tqdm,
                             desc="loki generate_until"):
            _, until, max_new, temperature, top_k, top_p = key
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                texts = self.generate_text([prepared[i][0] for i in chunk], max_new, list(until),
                                           temperature, top_k, top_p)
                for i, text in zip(chunk, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def generate_text(
        self, contexts: list[list[int]], max_new_tokens: int, until: list[str],
        temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Decode same-length contexts with a KV cache; each row stops at its first stop string
        (checked on the decoded text, since a stop string need not fall on token boundaries)."""
        return generate_with_stops(self.model, self.loki_tokenizer, contexts, max_new_tokens,
                                   until, temperature, top_k, top_p, generator)


def _window(ctx: list[int], cont: list[int], max_length: int) -> tuple[list[int], int]:
    """Model input (context + continuation minus the last token, at most ``max_length`` from the
    right) and how many continuation tokens are scored."""
    if not cont:
        raise LokiError("lm-eval sent an empty continuation; the task's choices are empty")
    whole = (ctx + cont)[-(max_length + 1):]
    return whole[:-1], min(len(cont), len(whole) - 1)


def _batch_size(value: int | str) -> int:
    if isinstance(value, str):
        if value.startswith("auto"):
            return 8  # no memory probing: a fixed, safe default
        value = int(value)
    if value < 1:
        raise LokiError(f"batch_size must be >= 1, got {value}")
    return int(value)


def register() -> None:
    """Make ``"loki"`` known to lm-eval's model registry (idempotent)."""
    # lm-eval fills its registry with the built-in models only when it finds it empty; fill it
    # first so that adding "loki" does not hide "hf" and the others.
    require("lm_eval.models", "eval")
    if "loki" not in _registry.model_registry:
        _registry.register_model("loki")(LokiEvalLM)


register()
