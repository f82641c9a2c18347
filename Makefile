# The two commands of the README. Both build .venv the same way: torch and torchvision first (a matched
# pair, CUDA builds that also run on the CPU), then the project.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The default model (stvun-gpu) takes about 1.5 minutes on a 2-core CPU; `--model classic` is the instant preview.
demo: $(VENV)/.installed
	mkdir -p out
	$(BIN)/stvsr upscale examples/vtest_200x150.mp4 out/vtest_800x600_50fps.mp4 --overwrite

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis *.egg-info
