# Two commands for a newcomer: `make app` and `make test`. Each sets up .venv/ first (idempotent).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages: espeak-ng (phonemizer backend, test speech), the open_jtalk dictionary (Japanese G2P),
# chromium + CJK fonts (browser tests of the app).
APT_PACKAGES := espeak-ng open-jtalk-mecab-naist-jdic chromium fonts-wqy-microhei

# Never talk to a model hub or analytics server from tests or the local app.
export GRADIO_ANALYTICS_ENABLED ?= False
export HF_HUB_DISABLE_TELEMETRY ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: app test bench notebooks lint system-deps clean zerogpu-check

app: $(STAMP)
	$(BIN)/python app.py

test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q
	$(MAKE) zerogpu-check

# The app on ZeroGPU under the real `spaces` package (bench/zero_gpu_check.py). Its CUDA emulation needs a torch
# build with CUDA bindings (no GPU): PyPI's default Linux wheel of the pinned torch, in a venv of its own that sees
# .venv's other packages. --isolated: this machine's pip settings would take the local CPU wheel instead.
ZEROGPU_VENV := .venv-zerogpu
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
zerogpu-check: $(STAMP) $(ZEROGPU_VENV)/.installed
	HF_HUB_OFFLINE=1 $(ZEROGPU_VENV)/bin/python bench/zero_gpu_check.py

$(ZEROGPU_VENV)/.installed: requirements.txt | $(STAMP)
	test -x $(ZEROGPU_VENV)/bin/python || $(PYTHON) -m venv $(ZEROGPU_VENV)
	$(ZEROGPU_VENV)/bin/python -m pip --isolated install -q --disable-pip-version-check '$(TORCH_PIN)'
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))" \
	  > $$($(ZEROGPU_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/vallex-base.pth
	$(ZEROGPU_VENV)/bin/python -c "import torch, spaces; assert torch.version.cuda, 'not a CUDA build'"
	touch $@

bench: $(STAMP)
	$(BIN)/python bench/inference.py --dtype all --stream

notebooks: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests/test_notebooks.py

lint: $(STAMP)
	$(BIN)/python -m pip check
	$(BIN)/ruff check .

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "Please install these Debian packages first: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q -e '.[app]'
	$(BIN)/python -m pip check
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(ZEROGPU_VENV) build *.egg-info .pytest_cache
