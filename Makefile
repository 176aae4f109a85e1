# The two set-up commands: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned so pip takes the local CPU build instead of a multi-GB CUDA one; the package itself
# only needs torch>=2.2.
TORCH ?= torch==2.13.0

.PHONY: demo test lint install clean system-tools results

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/retint demo -o out

# The results tables, sheets and bundled weights, from the shared photo pool (hours on CPU;
# runs already trained under runs/recipes are kept, scores are cached, and the runs the bundled
# models were trained as are restored from the package when missing).
SHARED ?= ../shared/data
RECIPES := $(BIN)/python scripts/recipes.py
DATA := $(SHARED)/photos $(SHARED)/imagenet-sample $(SHARED)/people $(SHARED)/streets
TEACHER ?= pool-aged
STUDENT ?= student-small
results: $(VENV)/.installed
	$(RECIPES) pool --data $(DATA)
	$(RECIPES) train --data $(DATA) --only enc-long-l1 student-mimic pool-l1 pool-pyramid \
		pool-feature pool-aged student-pool student-long student-small hint-colour
	$(RECIPES) table --data $(DATA) --write-docs \
		--benchmarks $(SHARED)/benchmarks/bsd100 \
		--only enc-long-l1 pool-l1 pool-pyramid pool-feature pool-aged student-mimic student-pool \
		student-long student-small \
		--sheet enc-long-l1 $(TEACHER) $(STUDENT)
	$(RECIPES) pareto $(TEACHER) student-pool student-long student-small --write-docs
	$(RECIPES) table --data $(DATA) --only $(TEACHER) $(STUDENT) --sheet $(TEACHER) $(STUDENT) \
		--benchmarks $(SHARED)/benchmarks/bsd100 $(SHARED)/benchmarks/urban100
	$(RECIPES) install $(TEACHER) $(STUDENT) --data $(DATA)
	$(RECIPES) hints hint-colour --data $(DATA) --benchmarks $(SHARED)/benchmarks/bsd100 \
		--write-docs
	$(RECIPES) install-hints hint-colour --data $(DATA)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts

# Browser tests drive Debian's Chromium (never a downloaded browser); video tests read our output
# back with ffprobe. Installed when missing and possible (root with apt-get); else those tests
# are skipped with a reason.
system-tools:
	@if command -v chromium >/dev/null && command -v ffprobe >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium ffmpeg >/dev/null) || echo "could not install chromium/ffmpeg"; \
	else echo "chromium/ffmpeg missing and not installable here: those tests will skip"; fi

test: lint system-tools
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
