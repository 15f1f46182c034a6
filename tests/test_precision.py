import io
from functools import partial

import pytest
import torch

import loki.precision as precision
from loki.config import LokiConfig
from loki.errors import LokiError
from loki.model import Loki
from loki.precision import Int8Training, adamw_8bit, check_optimizer, convert_to_float8
from loki.sharding import ShardingConfig, configure_loki

bnb = pytest.importorskip("bitsandbytes")
torchao_optim = pytest.importorskip("torchao.optim")


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 512, (2, 16), generator=g)
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture
def eager():
    # torchao compiles its step (slow on a CPU); the eager path is the same arithmetic
    with torch.compiler.set_stance("force_eager"):
        yield


@pytest.mark.parametrize("backend", ["bitsandbytes", "torchao"])
def test_8bit_state_survives_save_and_load(backend, eager):
    # bitsandbytes #2080: state precision changed after a round trip. Check the state stays
    # 8-bit after load_state_dict and the next steps are the same as without the round trip.
    torch.manual_seed(0)
    config = LokiConfig.from_name("tiny")
    a, b = Loki(config), Loki(config)
    b.load_state_dict(a.state_dict())
    make = partial(adamw_8bit, lr=1e-3, backend=backend)
    opt_a = make(a.parameters())
    _train(a, opt_a, 2, seed=1)
    buffer = io.BytesIO()  # through bytes, as a checkpoint: state_dict() holds live tensors
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    b.load_state_dict(a.state_dict())
    opt_b = make(b.parameters())
    opt_b.load_state_dict(saved)
    state = opt_b.state[b.blocks[0].attn.qkv.weight]
    moments = {k: v for k, v in state.items() if k in ("state1", "exp_avg")}
    assert moments, list(state)
    for v in moments.values():
        assert v.dtype == torch.uint8 or type(v).__name__ == "OptimState8bit", (type(v), v.dtype)
    _train(a, opt_a, 2, seed=2)
    _train(b, opt_b, 2, seed=2)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_auto_picks_torchao_for_sharded_parameters(monkeypatch):
    p = torch.nn.Parameter(torch.randn(64, 64))
    assert type(adamw_8bit([p])).__module__.startswith("bitsandbytes")
    monkeypatch.setattr(precision, "_is_dtensor", lambda t: True)
    assert type(adamw_8bit([p])).__module__.startswith("torchao")
    with pytest.raises(LokiError, match="cannot step FSDP2-sharded"):
        adamw_8bit([p], backend="bitsandbytes")


def test_bitsandbytes_really_fails_on_dtensors_and_check_optimizer_says_so(tmp_path):
    # The upstream fact behind the choice above, kept as a test so a fixed bitsandbytes shows up.
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        p = torch.nn.Parameter(distribute_tensor(torch.randn(64, 64), mesh, [Shard(0)]))
        opt = bnb.optim.AdamW8bit([p], min_8bit_size=0)
        with pytest.raises(LokiError, match="cannot step FSDP2-sharded"):
            check_optimizer(opt)
        p.grad = distribute_tensor(torch.randn(64, 64), mesh, [Shard(0)])
        with pytest.raises(RuntimeError, match="DTensor"):
            opt.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_gpu_only_options_refuse_the_cpu_clearly():
    with pytest.raises(LokiError, match="int8 matmul training .* needs a CUDA GPU"):
        Int8Training()
    with pytest.raises(LokiError, match="FP8 training needs a CUDA GPU"):
        convert_to_float8(Loki(LokiConfig.from_name("tiny")))
    with pytest.raises(LokiError, match="FP8 training needs a CUDA GPU"):
        configure_loki(Loki(LokiConfig.from_name("tiny")), ShardingConfig(float8=True), None)


def test_float8_filter_keeps_the_lm_head_and_odd_shapes_in_bf16():
    model = Loki(LokiConfig.from_name("tiny"))
    chosen = {n for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and precision.float8_filter(m, n)}
    assert "lm_head" not in chosen and "blocks.0.attn.qkv" in chosen
    assert not precision.float8_filter(torch.nn.Linear(24, 64), "blocks.0.mlp.down")


def test_float8_filter_follows_torchaos_size_heuristics_per_recipe():
    # loki-1.4b's block linears (built on the meta device): all FP8 under tensorwise; under
    # rowwise the two with a 2048-wide output stay bf16 (too small for rowwise scaling to pay).
    pytest.importorskip("torchao.float8")
    with torch.device("meta"):
        model = Loki(LokiConfig.from_name("loki-1.4b"))
    block = {n.split(".", 2)[2]: m for n, m in model.named_modules()
             if n.startswith("blocks.0.") and isinstance(m, torch.nn.Linear)}
    assert set(block) == {"attn.qkv", "attn.proj", "mlp.gate_up", "mlp.down"}

    def chosen(recipe):
        return {n for n, m in block.items() if precision.float8_filter(m, f"blocks.0.{n}", recipe)}

    assert chosen("tensorwise") == set(block)
    assert chosen("rowwise") == {"attn.qkv", "mlp.gate_up"}


def test_yaml_form_builds_the_library_optimizer():
    from jsonargparse import ArgumentParser
    from lightning.pytorch.cli import OptimizerCallable

    parser = ArgumentParser()
    parser.add_argument("--optimizer", type=OptimizerCallable)
    cfg = parser.parse_args(["--optimizer", '{"class_path": "loki.precision.AdamW8bit", '
                             '"init_args": {"lr": 0.001, "backend": "torchao"}}'])
    factory = parser.instantiate_classes(cfg).optimizer
    opt = factory([torch.nn.Parameter(torch.randn(64, 64))])
    assert type(opt).__module__.startswith("torchao") and float(opt.param_groups[0]["lr"]) == pytest.approx(1e-3)


def test_fp8_gather_scales_are_precomputed_before_every_step_and_validation(tmp_path,
                                                                            monkeypatch):
    # torchao's one-reduction precompute, called when the weights may have moved: at each
    # training step's start and before validation; never for a model without FP8 linears.
    import lightning as L
    import torchao.float8

    from loki.module import LokiLM
    from loki.precision import precompute_float8_scales
    from tests.helpers.synthetic import SyntheticSteps

    calls = []
    monkeypatch.setattr(torchao.float8, "precompute_float8_dynamic_scale_for_fsdp",
                        lambda model: calls.append((type(model).__name__, model.training)))
    plain = LokiLM("tiny").model
    precompute_float8_scales(plain)
    assert calls == []
    module = LokiLM("tiny")
    module.model._loki_float8 = True  # as configure_loki marks a converted model
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=1, val_check_interval=2,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(module, SyntheticSteps(n_steps=3, micro=2, seq=16))
    # steps 1 and 2, the validation after step 2 (in eval mode), step 3
    assert calls == [("Loki", True), ("Loki", True), ("Loki", False), ("Loki", True)]
