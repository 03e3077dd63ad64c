# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test check demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10) and "Python >= 3.10 is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) check
	$(PY) -m pytest

check: $(STAMP)
	$(VENV)/bin/ruff check tornado_prefork tests demo benchmarks
	$(VENV)/bin/ruff format --check tornado_prefork tests demo benchmarks
	$(VENV)/bin/mypy

demo: $(STAMP)
	$(PY) demo/app.py --processes 4 --address 127.0.0.1 --port 8888

# By hand, never in CI: needs wrk (apt-get install -y wrk); writes docs/benchmarks.md,
# its charts, and the summary table in README.md.
bench: $(STAMP)
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install -y wrk" >&2; exit 2; }
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
