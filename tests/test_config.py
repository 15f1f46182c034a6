import pytest
import torch

from loki.config import NAMED_CONFIGS, LokiConfig
from loki.model import Loki


def test_loki_1_4b_parameter_count_on_meta_device():
    config = LokiConfig.from_name("loki-1.4b")
    with torch.device("meta"):
        model = Loki(config)
    n = model.num_params()
    assert n == config.num_params()
    assert abs(n - 1.40e9) / 1.40e9 <= 0.02, n
    assert (config.n_layer, config.n_head, config.n_embd, config.vocab_size) == (24, 32, 2048, 32000)


@pytest.mark.parametrize("name", list(NAMED_CONFIGS))
def test_named_configs_build_and_count(name):
    config = LokiConfig.from_name(name)
    with torch.device("meta"):
        assert Loki(config).num_params() == config.num_params()


def test_small_is_a_few_million_parameters():
    assert 2e6 < LokiConfig.from_name("small").num_params() < 20e6


def test_tied_embeddings_count_once():
    config = LokiConfig.from_name("tiny", tie_embeddings=True)
    model = Loki(config)
    assert model.lm_head.weight is model.wte.weight
    assert model.num_params() == config.num_params()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_embd=64, n_head=5), "divisible by n_head"),
        (dict(n_layer=0), "n_layer must be positive"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention_backend="triton"), "attention_backend"),
    ],
)
def test_bad_combinations_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LokiConfig(**kwargs)


def test_unknown_name_and_field():
    with pytest.raises(ValueError, match="unknown config name 'huge'"):
        LokiConfig.from_name("huge")
    with pytest.raises(ValueError, match="unknown LokiConfig field"):
        LokiConfig.from_name("tiny", n_layers=3)
