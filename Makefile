# membench: `make test` and `make leaderboard` each set everything up on a fresh machine.
#   TORCH_SPEC  which torch to install first (CI asks for the CPU build: TORCH_SPEC=torch==2.13.0)
#   EXTRAS      optional dependency groups of the project to install (dev, ray, parquet, hf)
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch>=2.6
EXTRAS     ?= dev
comma      := ,
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install test bench leaderboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m pytest -q -m benchmark --benchmark-enable --benchmark-columns=min,median,max,rounds

leaderboard: install
	$(VENV)/bin/membench leaderboard --out results/latest

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .hypothesis
