"""loki.errors.one_line: the hint for a list option given one bare value must be a command
that works, i.e. that parses back to a one-item list holding exactly what was typed."""

import shlex
from typing import Literal

import pytest
from jsonargparse import ArgumentParser

from loki.errors import one_line


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--prompt", type=list[str])
    return parser


@pytest.mark.parametrize("value", ["docs", "Once upon a time", "data/demo/*.jsonl", "a, b",
                                   "Q: why", "it's here", "[draft", "# heading", "x: {y}"])
def test_the_list_hint_parses_back_to_the_value_typed(value):
    args = ["--prompt", value]
    with pytest.raises(Exception) as exc:  # noqa: PT011 (jsonargparse's ArgumentError)
        _parser().parse_args(args)
    text = one_line(exc.value, args)
    assert "a list goes in brackets" in text, text
    suggested = shlex.split(text.rsplit("--prompt ", 1)[1])
    assert _parser().parse_args(["--prompt", *suggested]).prompt == [value]


def test_a_plain_value_keeps_the_short_hint():
    args = ["--prompt=docs"]
    with pytest.raises(Exception) as exc:  # noqa: PT011
        _parser().parse_args(args)
    assert one_line(exc.value, args).endswith("a list goes in brackets: --prompt '[docs]'")


def test_an_optional_list_given_a_bare_value_gets_the_same_hint():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--val_sources", type=list[str] | None, default=None)
    args = ["--val_sources", "data/shards/web"]
    with pytest.raises(Exception) as exc:  # noqa: PT011
        parser.parse_args(args)
    text = one_line(exc.value, args)
    assert "Union subtypes" not in text, text
    assert text.endswith("a list goes in brackets: --val_sources '[data/shards/web]'"), text


@pytest.mark.parametrize(("type_", "value", "says"), [
    (bool | Literal["auto"], "maybe", "expected true, false or auto; got maybe"),
    (int | None, "ten", "expected an integer or null; got ten"),
    (Literal["hard", "easy"] | None, "soft", "expected hard, easy or null; got soft"),
    (Literal["kept", "all"], "some", "expected kept or all; got some"),
    (bool, "yes please", "expected true or false; got yes please"),
])
def test_a_value_of_none_of_the_types_names_the_values_taken(type_, value, says):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--opt", type=type_)
    args = ["--opt", value]
    with pytest.raises(Exception) as exc:  # noqa: PT011
        parser.parse_args(args)
    assert one_line(exc.value, args) == f'Parser key "opt": {says}'


def _nested_error(option: str, type_: object, args: list[str]) -> str:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f"--{option}", type=type_, default=None)
    with pytest.raises(Exception) as exc:  # noqa: PT011
        parser.parse_args(args)
    return one_line(exc.value, args)


def test_a_setting_of_a_nested_config_names_its_class_and_the_values_taken():
    from loki.sharding import ShardingConfig

    text = _nested_error("sharding", ShardingConfig | None,
                         ["--sharding.compile_scope", "everything"])
    assert text == ('Parser key "compile_scope" of loki.sharding.ShardingConfig in sharding: '
                    "expected blocks or model; got everything")


def test_a_setting_of_a_callback_names_the_callback_and_the_values_taken():
    import json

    from lightning.pytorch.callbacks import Callback

    callbacks = [{"class_path": "callbacks.throughput.TokenThroughput",
                  "init_args": {"compute": "fp16"}}]
    text = _nested_error("callbacks", list[Callback] | Callback | None,
                         ["--callbacks", json.dumps(callbacks)])
    assert text == ('Parser key "compute" of callbacks.throughput.TokenThroughput in callbacks: '
                    "expected bf16 or fp8; got fp16")
