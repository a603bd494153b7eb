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

.PHONY: app test bench notebooks lint system-deps clean

app: $(STAMP)
	$(BIN)/python app.py

test: $(STAMP)
	$(BIN)/ruff check .
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

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
	rm -rf $(VENV) build *.egg-info .pytest_cache
