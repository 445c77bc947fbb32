# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench docs docs-build

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# numpy is pinned in the same command so that nothing upgrades it past MXNet's reach
	$(PY) -m pip install -q "numpy==1.23.5" -e ".[cpu,onnx,openvino,test,docs]"
	touch $(STAMP)

install: $(STAMP)

# each demo run gets its own folder, so an earlier run is never overwritten
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/gluon-yolo3 train recipes/demo_tiny.yaml --workdir $(DEMO_DIR)
	$(VENV)/bin/gluon-yolo3 eval recipes/demo_tiny.yaml --weights $(DEMO_DIR) --json $(DEMO_DIR)/eval.json

test: $(STAMP)
	$(PY) -m pytest -q tests

# every benchmark, ours against GluonCV in one run: benchmarks/results/<date>.json and .md
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# the documentation: served at http://127.0.0.1:8000 with live reload; built into site/ as CI builds it
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
