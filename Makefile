# routeplane — `make serve` starts the gateway, `make test` runs every test.
# Both create .venv on first use; nothing needs installing by hand.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := $(wildcard contrib/plugins/*/setup.cfg)

.PHONY: serve test bench lint clean venv

$(BIN)/.installed: Makefile setup.cfg pyproject.toml $(PLUGINS)
	@py=$(PYTHON); test -x $(BIN)/python && py=$(BIN)/python; $$py -c 'import sys; sys.exit(sys.version_info < (3, 10) \
	  and "routeplane needs Python 3.10+ (gunicorn >= 24), not " + sys.version.split()[0] + ": run make with" \
	  " PYTHON=python3.11 (or any 3.10+)" + (" after rm -rf $(VENV)" if sys.prefix != sys.base_prefix else ""))'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,postgres,mysql,web3]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

venv: $(BIN)/.installed

serve: $(BIN)/.installed
	$(BIN)/routeplane serve

# The suite mostly waits (gunicorn, nginx and database start-ups, signals, streams): two pytest-xdist
# workers, each running whole files (module-scoped gateways are started once). TEST_JOBS=0 runs serially.
TEST_JOBS ?= 2

test: $(BIN)/.installed
	scripts/test-services
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadfile) $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check routeplane tests

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
