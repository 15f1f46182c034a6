"""The CPU demo's precision choice (bf16 only where the CPU multiplies it natively), and the
warm-up that makes torch's CPU exp, log, sqrt and tanh give the same bits in every process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loki import cpu, demo, demo_stages
from loki.distill.teachers import HFTeacher


@pytest.fixture
def capabilities(monkeypatch):
    def set_caps(**caps):
        cpu.native_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)

    yield set_caps
    cpu.native_bf16.cache_clear()


@pytest.mark.parametrize(("caps", "native"), [
    ({"amx_bf16": True, "avx512_bf16": True}, True),  # Sapphire Rapids and later
    ({"amx_bf16": False, "avx512_bf16": True}, True),  # Cooper Lake, Zen 4
    ({"avx512_f": True, "avx2": True}, False),  # AVX-512 without bf16: emulated
    ({}, False),  # other architectures report nothing of these
])
def test_native_bf16_reads_the_cpu_capabilities(capabilities, caps, native):
    capabilities(**caps)
    assert cpu.native_bf16() is native
    assert cpu.resolve_bf16("auto") is native
    assert cpu.resolve_bf16(True) is True and cpu.resolve_bf16(False) is False
    with pytest.raises(ValueError, match="true, false or auto"):
        cpu.resolve_bf16("yes")


def test_hf_teacher_auto_dtype_is_resolved_and_recorded(capabilities):
    capabilities(avx2=True)
    assert HFTeacher("m", dtype="auto").dtype == "float32"
    assert HFTeacher("m", dtype="auto", device="cuda").dtype == "bfloat16"
    assert HFTeacher("m", dtype="auto").identity()["dtype"] == "float32"
    capabilities(amx_bf16=True)
    assert HFTeacher("m", dtype="auto").dtype == "bfloat16"
    assert HFTeacher("m", dtype="float32").dtype == "float32"  # an explicit dtype is kept


def test_demo_fits_and_sampling_follow_the_bf16_choice(capabilities):
    capabilities(amx_bf16=True)
    cfg = demo.parse_config(Path(__file__).parents[1] / "experiments" / "demo.yaml")
    assert cfg.bf16 == "auto"
    assert demo_stages.precision_args(cfg) == ["--trainer.precision", "bf16-mixed"]
    assert demo_stages.teacher_dtype(cfg) == "bfloat16"
    assert "natively" in demo._precision_line(cfg)
    capabilities()
    assert demo_stages.precision_args(cfg) == [] and demo_stages.teacher_dtype(cfg) == "float32"
    assert demo._precision_line(cfg) == "precision: fp32 (this CPU has no native bf16 matmuls)"
    cfg.bf16 = True  # forced on a CPU without it (slower, but the user asked)
    assert demo_stages.precision_args(cfg) == ["--trainer.precision", "bf16-mixed"]
    assert "--bf16 true" in demo._precision_line(cfg)


# A fresh process's first log against its second, after the warm-up. Without it, on two threads,
# they differ in about one process in three on a quiet machine (loki.cpu): 16 processes all equal
# by chance ~0.3%. A busy machine races less (under `make test` the other pytest worker runs
# beside this test), and an AVX2-only AMD host never showed the race at all.
_FIRST_CALL = """
import torch
from loki.cpu import warm_up_vector_math
warm_up_vector_math()
x = torch.rand(32, 512, generator=torch.Generator().manual_seed(0)) + 0.5
print(torch.equal(torch.log(x), torch.log(x)))
"""


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the first-call race needs two threads")
def test_vector_math_warm_up_makes_first_calls_equal_later_ones():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "2"}
    # one at a time: processes started together race less, and the test would see less
    runs = [subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, text=True,
                           capture_output=True, timeout=300) for _ in range(16)]
    assert [run.stdout.strip() for run in runs] == ["True"] * 16, [r.stderr[-500:] for r in runs]
