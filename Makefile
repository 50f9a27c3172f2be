# neuroflow: `make example` runs the workflow on generated example data; `make test` runs the tests.
# Both install what they need into .venv at the repository root.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.neuroflow-installed

.PHONY: install example test test-slurm lint bench mutate clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[tools,dev]'
	# QSIParc without its optional plotting stack (vtk, ~1 GB) that it never imports
	$(BIN)/python -m pip install -q --no-deps qsiparc==0.1.2 parcellate==0.4.2
	# Snakemake lists logger plugins with pkgutil, which does not see editable installs:
	# a path entry with the plugin package as a link to its source
	mkdir -p $(VENV)/plugins
	ln -sfn $(CURDIR)/neuroflow_recover/logger_plugin $(VENV)/plugins/snakemake_logger_plugin_neuroflow
	$(BIN)/python -c "import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], 'neuroflow-plugins.pth').write_text('$(CURDIR)/$(VENV)/plugins\n')"
	touch $(STAMP)

example: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash example/run.sh

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/run.sh

test-slurm: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/slurm/run.sh

lint: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" snakemake --lint --snakefile workflow/Snakefile
	PATH="$(CURDIR)/$(BIN):$$PATH" snakefmt --check workflow
	$(BIN)/python -m ruff check neuroflow_recover tests benchmarks example

# mutation testing of the modules that carry the promises (not part of `make test`)
mutate: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[mutate]'
	PATH="$(CURDIR)/$(BIN):$$PATH" bash tests/mutation/run.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/classifier_accuracy.py
	$(BIN)/python benchmarks/recovery_cost.py
	$(BIN)/python benchmarks/dag_scale.py --floor
	$(BIN)/python benchmarks/dlq_scale.py
	$(BIN)/python benchmarks/status_scale.py
	$(BIN)/python benchmarks/daily_plan.py
	$(BIN)/python benchmarks/ingest_scale.py
	$(BIN)/python benchmarks/dlq_stress.py

clean:
	rm -rf mutants example/data example/results example/work example/.snakemake example/.neuroflow
