# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OLDEST := .venv-tornado-6.4
PRE := .venv-tornado-pre
PIP = -m pip --disable-pip-version-check
PYTEST := -m pytest -p no:cacheprovider
LANES := test-lane-1 test-lane-2

.PHONY: test $(LANES) test-alone test-oldest test-pre test-uvloop bytecode check demo bench clean

# A virtualenv with the pip that Python brings, upgraded only when it is older than
# 21.3, the first to install a pyproject.toml-only project in editable mode: each
# upgrade costs seconds per virtualenv.
define make-venv
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python >= 3.10 is needed")'
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -c 'import pip, sys; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' \
	    || $(1)/bin/python $(PIP) install --quiet --upgrade pip
endef

# .venv holds the tools and uvloop: `make test-uvloop` runs in it.
$(STAMP): pyproject.toml Makefile
	$(call make-venv,$(VENV))
	$(PY) $(PIP) install --quiet -e '.[dev,uvloop]'
	touch $(STAMP)

$(OLDEST)/.installed: pyproject.toml Makefile
	$(call make-venv,$(OLDEST))
	$(OLDEST)/bin/python $(PIP) install --quiet -e '.[test]' 'tornado==6.4.*'
	touch $@

$(PRE)/.installed: pyproject.toml Makefile
	$(call make-venv,$(PRE))
	$(PRE)/bin/python $(PIP) install --quiet -e '.[test]'
	$(PRE)/bin/python $(PIP) install --quiet --upgrade --pre tornado
	touch $@

# What make test runs, on 2 CPUs in about 5 minutes from a clean clone:
# - the whole suite on the newest Tornado, with every serve() scenario on uvloop
#   (test-uvloop);
# - on Tornado 6.4 with asyncio, the tests marked tornado_api (test-oldest): those whose
#   outcome depends on what Tornado does (its HTTP server, web framework, WebSockets,
#   IOLoop, options, logging, netutil, testing helpers, fork_processes, each private
#   name the package uses) and one run of each lifecycle scenario. The rest (the
#   supervisor, the checks of settings, the simulation, the metrics' files, ...) does
#   not touch Tornado and runs once; the serve() scenarios among the tornado_api tests
#   are the ones on asyncio;
# - the same tests on Tornado's newest pre-release when the package index has one
#   (test-pre: shown, not counted).
# The first two run in two lanes at once, as the tests wait on sleeps, signals and
# sockets more than they use a CPU: lane K runs shard K/2 of each (one test in two,
# tests/conftest.py), and make prints each lane's output once the lane has finished.
# Then the tests marked alone run, with nothing else running: what they assert
# assumes free CPUs. The 6.4 virtualenv is made while `check` runs (not alongside
# the other one: both builds write tornado_prefork.egg-info).
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target check bytecode $(OLDEST)/.installed
	$(MAKE) --no-print-directory -j2 --output-sync=target $(LANES)
	$(MAKE) --no-print-directory test-alone
	@$(MAKE) --no-print-directory test-pre || echo "make test-pre FAILED (a Tornado pre-release; not counted)" >&2

# A shard of test-uvloop, then the same of test-oldest; both run, whichever fails.
SHARD = $(if $(filter test-alone,$@),alone,$(@:test-lane-%=%)/2)
test-alone $(LANES): $(STAMP) $(OLDEST)/.installed
	TORNADO_PREFORK_TEST_SHARD=$(SHARD) $(MAKE) --no-print-directory test-uvloop; status=$$?; \
	TORNADO_PREFORK_TEST_SHARD=$(SHARD) $(MAKE) --no-print-directory test-oldest && exit $$status

# The suite with every serve() scenario on uvloop (TORNADO_PREFORK_TEST_LOOP).
test-uvloop: $(STAMP) bytecode
	TORNADO_PREFORK_TEST_LOOP=uvloop $(PY) $(PYTEST)

test-oldest: $(OLDEST)/.installed bytecode
	$(OLDEST)/bin/python $(PYTEST) -m tornado_api

# Runs only when Tornado's newest version on the package index is a pre-release.
test-pre: $(STAMP) bytecode
	@newest=$$($(PY) $(PIP) index versions --pre tornado 2>/dev/null | sed -n 's/^tornado (\(.*\))$$/\1/p'); \
	case "$$newest" in \
	*[a-z]*) $(MAKE) --no-print-directory $(PRE)/.installed && $(PRE)/bin/python $(PYTEST) -m tornado_api ;; \
	"") echo "test-pre: could not read Tornado's versions from the package index" >&2; exit 1 ;; \
	*) echo "test-pre: Tornado's newest version, $$newest, is a release: no pre-release to test" ;; \
	esac

# Each test starts fresh interpreters, hundreds in all: compiled once here, the package
# and the tests are not compiled again in each where Python writes no bytecode itself
# (PYTHONDONTWRITEBYTECODE, set on some CI machines).
bytecode: $(STAMP)
	$(PY) -m compileall -q tornado_prefork tests

check: $(STAMP)
	$(VENV)/bin/ruff check tornado_prefork tests demo benchmarks
	$(VENV)/bin/ruff format --check tornado_prefork tests demo benchmarks
	$(VENV)/bin/mypy

# The demo needs tornado-prefork and Tornado alone: a virtualenv of its own,
# not the test tools.
DEMO := .venv-demo

demo: $(DEMO)/.installed
	$(DEMO)/bin/python demo/app.py --processes 4 --address 127.0.0.1 --port $(or $(PORT),8888)

$(DEMO)/.installed: pyproject.toml Makefile
	$(call make-venv,$(DEMO))
	$(DEMO)/bin/python $(PIP) install --quiet -e .
	touch $@

# By hand, never in CI: needs wrk (apt-get install -y wrk) and taskset (util-linux);
# about 14 minutes on 2 CPUs; writes docs/benchmarks.md, its charts, and the summary
# table in README.md.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk" >&2; exit 2; }
	@command -v taskset >/dev/null || { echo "make bench needs taskset: apt-get install -y util-linux" >&2; exit 2; }
	$(PY) $(PIP) install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(OLDEST) $(PRE) .venv-uvloop $(DEMO) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
