# The README's commands. `make demo` is the main job; `make test` is what CI runs.
# Both create .venv on first use and install the project with a constraints file that pins the
# CPU build of torch (an unpinned torch would pull a multi-GB CUDA build on these machines).

SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS := dev,eval,data,distill,wandb,report,eightbit,ray

# Nothing reaches the network at run time; caches stay inside the project (ignored folders).
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export HF_HOME ?= $(CURDIR)/.cache/hf
export TIKTOKEN_CACHE_DIR ?= $(CURDIR)/.cache/tiktoken
export WANDB_DIR ?= $(CURDIR)/runs
export WANDB_CACHE_DIR ?= $(CURDIR)/.cache/wandb
export WANDB_CONFIG_DIR ?= $(CURDIR)/.cache/wandb-config
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib
export TOKENIZERS_PARALLELISM ?= false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test install lint clean-demo rehearsal

demo: $(STAMP)
	$(BIN)/loki demo --config experiments/demo.yaml $(DEMO_ARGS)

# Two pytest workers (pytest-xdist), each test file on one: most tests are single-threaded Python
# (imports, small tensors, subprocesses), so two take a third less time than one process.
# `make test WORKERS=0` runs them in this process.
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

# The 1.4B recipe rehearsed on 2 CPU processes with its console shown (tests/test_rehearsal.py
# runs the same in `make test`): fit, a kill, the resume, a rollback, the Table-1 eval.
rehearsal: $(STAMP)
	$(BIN)/python tests/test_rehearsal.py runs/rehearsal/$$(date +%Y%m%d-%H%M%S)

lint: $(STAMP)
	$(BIN)/ruff check .

install: $(STAMP)

# torch comes through pip, which also finds the CPU wheel that machines without a GPU keep on disk;
# the ~200 other packages through uv (1 minute where pip takes 3-4), which keeps the torch already
# installed since the constraints pin the same version. uv writes bytecode only when asked: without
# it every fresh process (Ray workers, the tests' subprocesses) compiles the modules it imports.
# `make install INSTALLER=pip` installs everything with pip.
INSTALLER ?= uv
export UV_CACHE_DIR ?= $(CURDIR)/.cache/uv

$(STAMP): setup.cfg constraints-cpu.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q -c constraints-cpu.txt torch==2.13.0
ifeq ($(INSTALLER),uv)
	$(BIN)/pip install -q -c constraints-cpu.txt uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -c constraints-cpu.txt -e '.[$(EXTRAS)]'
else
	$(BIN)/pip install -q -c constraints-cpu.txt -e '.[$(EXTRAS)]'
endif
	touch $(STAMP)

clean-demo:
	rm -rf runs/demo runs/demo-teacher data/demo/tasks data/demo/filtered data/demo/filter_work data/demo/quality data/demo/tokenizer data/demo/synthetic data/demo/shards data/demo/distill
