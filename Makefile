# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-oldest test-pre test-uvloop check demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python >= 3.10 is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

OLDEST := .venv-tornado-6.4
PRE := .venv-tornado-pre

# The whole suite twice: the newest Tornado with every serve() scenario on uvloop,
# then the oldest supported Tornado (6.4) on asyncio, so that both versions and
# both loops are covered; then Tornado's newest pre-release, whose failures are
# shown but do not fail the run.
test: $(STAMP) check
	$(MAKE) test-uvloop
	$(MAKE) test-oldest
	@$(MAKE) test-pre || echo "make test-pre FAILED (a Tornado pre-release; not counted)" >&2

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pytest -p no:cacheprovider

# Runs only when Tornado's newest version on the package index is a pre-release.
test-pre: $(STAMP)
	@newest=$$($(PY) -m pip index versions --pre tornado 2>/dev/null | sed -n 's/^tornado (\(.*\))$$/\1/p'); \
	case "$$newest" in \
	*[a-z]*) $(MAKE) $(PRE)/.installed && $(PRE)/bin/python -m pytest -p no:cacheprovider ;; \
	"") echo "test-pre: could not read Tornado's versions from the package index" >&2; exit 1 ;; \
	*) echo "test-pre: Tornado's newest version, $$newest, is a release: no pre-release to test" ;; \
	esac

$(PRE)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PRE)
	$(PRE)/bin/python -m pip install --quiet --upgrade pip
	$(PRE)/bin/python -m pip install --quiet -e '.[test]'
	$(PRE)/bin/python -m pip install --quiet --upgrade --pre tornado
	touch $@

# The suite with every serve() scenario on uvloop (TORNADO_PREFORK_TEST_LOOP).
UVLOOP := .venv-uvloop

test-uvloop: $(UVLOOP)/.installed
	TORNADO_PREFORK_TEST_LOOP=uvloop $(UVLOOP)/bin/python -m pytest -p no:cacheprovider

$(UVLOOP)/.installed: pyproject.toml
	$(PYTHON) -m venv $(UVLOOP)
	$(UVLOOP)/bin/python -m pip install --quiet --upgrade pip
	$(UVLOOP)/bin/python -m pip install --quiet -e '.[test,uvloop]'
	touch $@

$(OLDEST)/.installed: pyproject.toml
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST)/bin/python -m pip install --quiet -e '.[test]' 'tornado==6.4.*'
	touch $@

check: $(STAMP)
	$(VENV)/bin/ruff check tornado_prefork tests demo benchmarks
	$(VENV)/bin/ruff format --check tornado_prefork tests demo benchmarks
	$(VENV)/bin/mypy

# The demo needs tornado-prefork and Tornado alone: a virtualenv of its own,
# not the test tools.
DEMO := .venv-demo

demo: $(DEMO)/.installed
	$(DEMO)/bin/python demo/app.py --processes 4 --address 127.0.0.1 --port $(or $(PORT),8888)

$(DEMO)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python >= 3.10 is needed")'
	$(PYTHON) -m venv $(DEMO)
	$(DEMO)/bin/python -m pip install --quiet --upgrade pip
	$(DEMO)/bin/python -m pip install --quiet -e .
	touch $@

# By hand, never in CI: needs wrk (apt-get install -y wrk) and taskset (util-linux);
# about 14 minutes on 2 CPUs; writes docs/benchmarks.md, its charts, and the summary
# table in README.md.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk" >&2; exit 2; }
	@command -v taskset >/dev/null || { echo "make bench needs taskset: apt-get install -y util-linux" >&2; exit 2; }
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) $(OLDEST) $(PRE) $(UVLOOP) $(DEMO) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
