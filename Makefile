# membench: `make test` and `make leaderboard` each set everything up on a fresh machine.
#   TORCH_SPEC  which torch to install first (CI asks for the CPU build: TORCH_SPEC=torch==2.13.0)
#   EXTRAS      optional dependency groups of the project to install (dev, ray, parquet, hf, tensorboard, wandb, mlflow)
# Everything but torch installs at the tested versions of constraints.txt; `make test-latest` tries the newest.
PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch>=2.6
EXTRAS     ?= dev
comma      := ,
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
LATEST     := .venv-latest

.PHONY: install lint test test-latest constraints bench bench-baseline leaderboard clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

# The suite against the newest release of every dependency (no constraints), in a new venv of its own.
test-latest:
	rm -rf $(LATEST) && $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(LATEST)/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -v '^-e' > $(LATEST)/versions.txt
	$(LATEST)/bin/python -m pytest -q

# Pins what `make test-latest` just passed with (torch and its own requirements excepted).
constraints: $(LATEST)/versions.txt
	{ sed -n '1,3p' constraints.txt; grep -viE '^(torch|filelock|fsspec|jinja2|markupsafe|networkx|setuptools|sympy|mpmath|typing[-_]extensions|membench|pip|wheel)==' $<; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

# Benchmarks, then their costs against benchmarks/baseline.json: a guarded one more than 25 % slower fails the run.
BENCH_RUN  := .benchmarks/latest.json
BENCH_ARGS := -p tests.bench_baseline -m benchmark --benchmark-enable --benchmark-json=$(BENCH_RUN)
bench: install
	mkdir -p $(dir $(BENCH_RUN))
	$(PY) -m pytest -q $(BENCH_ARGS) --benchmark-columns=min,median,max,rounds
	$(PY) -m tests.bench_baseline check $(BENCH_RUN)

# Rewrites benchmarks/baseline.json from the guarded benchmarks (generation, training steps, evaluation) on this machine.
bench-baseline: install
	mkdir -p $(dir $(BENCH_RUN))
	$(PY) -m pytest -q $(BENCH_ARGS) tests/test_bench_tasks.py tests/test_bench_models.py tests/test_bench_eval.py
	$(PY) -m tests.bench_baseline update $(BENCH_RUN)

leaderboard: install
	$(VENV)/bin/membench leaderboard --out results/latest

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .benchmarks .hypothesis
