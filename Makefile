# Two commands do all the set-up on a fresh machine with only Python 3.11+:
#   make book   creates .venv if missing, installs, executes every chapter, writes HTML
#   make test   unit tests + every chapter through nbval (what CI runs)
# BOOK_PROFILE=smoke|paper picks the sizes (default: paper with CUDA, smoke without).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: install test book check-html seed-table clean

install: $(STAMP)

# torch is pinned through constraints.txt so no step can pull a newer (CUDA) torch.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[book,test]"
	$(PY) -m pip check
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope

# Each profile builds into its own folder: jupyter-cache keys on cell source only, so a
# profile switch would otherwise reuse stale outputs. Sphinx also skips unchanged pages, so a
# change in support/ (or pyproject.toml) wipes the profile's build and executes every chapter again.
book: $(STAMP)
	@set -- $$($(PY) -c "from support.infra.profiles import get_profile as g; p = g(); print(p.name, p.run_name)"); \
	profile=$$1; run=$$2; \
	out=_build/$$run; \
	stamp=$$(cat pyproject.toml $$(find support -name '*.py' | sort) | sha256sum | cut -c1-16); \
	if [ -f $$out/.support-hash ] && [ "$$(cat $$out/.support-hash)" != "$$stamp" ]; then \
		echo "support/ changed since the last $$profile build: rebuilding it from scratch"; \
		rm -rf $$out/_build; \
	fi; \
	echo "Building the book with BOOK_PROFILE=$$profile (seed: $${BOOK_SEED:-default}) into $$out"; \
	BOOK_PROFILE=$$profile $(VENV)/bin/jupyter-book build . --path-output $$out -W -n --keep-going && \
	mkdir -p $$out && echo $$stamp > $$out/.support-hash && \
	echo "Open $$(pwd)/$$out/_build/html/index.html"

# Every built page opened offline in headless Chromium (Debian's `chromium` package; nothing is downloaded):
# fails on untypeset math, TeX left in the text, broken images, empty tables or JavaScript errors, and
# saves a screenshot per page next to the HTML. Not part of CI (CI has no browser).
check-html: book
	@run=$$($(PY) -c "from support.infra.profiles import get_profile as g; print(g().run_name)"); \
	$(PY) -m support.infra.browser_check _build/$$run/_build/html

# Which checked claims hold under other seeds: every chapter (smoke) for seeds 0-4, one table.
# SEEDS="0 1 2" and CHAPTERS="book/10_likelihood.md ..." narrow it; about 15 minutes a seed on 2 cores.
SEEDS ?= 0 1 2 3 4
seed-table: $(STAMP)
	$(PY) -m support.infra.seed_table --seeds $(SEEDS) --workers $(PYTEST_WORKERS) $(if $(CHAPTERS),--chapters $(CHAPTERS))

clean:
	rm -rf _build .pytest_cache
