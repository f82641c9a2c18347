# The two commands of the README. Both build .venv the same way: torch and torchvision first (a matched
# pair, CUDA builds that also run on the CPU), then the project.
#
# One step per stamp file in .venv, each stamp written as the step's last command, so only after it
# succeeded: a step that fails half way (a download cut off) is redone on the next run, and the steps after
# it wait for it. Without that, `pip install -e .` on a venv that lacks the pinned torch would pull in the
# newest torch instead.
#
# TORCH_INDEX_URL installs another build of the same torch and torchvision, e.g. the CPU-only one:
#   make demo TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The build given is kept by later runs that name none; another URL reinstalls the pair, and
# `make clean` goes back to the default one.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_INDEX_URL ?=

TORCH_STAMP := $(VENV)/.torch-installed
DEMO_OUT    := out/vtest_800x600_50fps.mp4

.PHONY: demo test clean FORCE
# A recipe that fails leaves no target behind, so nothing half made passes for done.
.DELETE_ON_ERROR:

$(VENV)/.venv-made:
	$(PYTHON) -m venv $(VENV)
	touch $@

# The torch stamp holds the index URL the pair came from (empty: the default one). When a
# TORCH_INDEX_URL is given and differs from it, the step is redone, and the old pair removed first:
# pip counts 2.14.1+cpu as torch==2.14.1 and would keep it.
ifneq ($(TORCH_INDEX_URL),)
ifneq ($(wildcard $(TORCH_STAMP)),)
ifneq ($(shell cat $(TORCH_STAMP)),$(TORCH_INDEX_URL))
TORCH_SWITCH := yes
endif
endif
endif

$(TORCH_STAMP): $(VENV)/.venv-made $(if $(TORCH_SWITCH),FORCE)
	$(if $(TORCH_SWITCH),rm $@ && $(BIN)/pip uninstall -y torch torchvision)
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1$(if $(TORCH_INDEX_URL), --index-url $(TORCH_INDEX_URL))
	printf '%s\n' '$(TORCH_INDEX_URL)' > $@

$(VENV)/.installed: pyproject.toml $(TORCH_STAMP)
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -e '.[dev]'
	touch $@

# The default model (stvun-gpu) takes about 1.5 minutes on a 2-core CPU; `--model classic` is the instant preview.
# The last line says where the video is and how long the upscale took (date +%s around it, in /bin/sh).
demo: $(VENV)/.installed
	mkdir -p out
	start=$$(date +%s) && $(BIN)/stvsr upscale examples/vtest_200x150.mp4 $(DEMO_OUT) --overwrite && \
	echo "demo: wrote $(DEMO_OUT) in $$(($$(date +%s) - start)) s"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis *.egg-info
