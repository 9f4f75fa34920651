# Two commands do all set-up on a fresh machine:
#   make demo   creates .venv, installs robustlab, runs the catastrophic-overfitting demo
#   make test   same set-up, runs the test suite
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
TORCH    ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test bench setup clean browser claims

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, pinned, so that no dependency resolves a CUDA build of torch.
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[formats,offline,progress,ray,autoattack,safetensors,tensorboard,mlflow,test]"
	# torchattacks (independent cross-check in the tests and benchmarks) declares torchvision,
	# which has no CPU build here: install it without its dependencies.
	$(BIN)/pip install -q --no-deps "torchattacks==3.5.1"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/robustlab demo

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The report test renders HTML in headless Chromium (Debian's package). Best effort: installed when missing and
# this user may (root); otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium not installed: the headless-browser report test will be skipped"

# The CO claims of README and docs, re-run: the CO demo over 5 seeds x 2 CPU kernel paths (60 runs, ~14-23 min on 2 cores),
# then which claims hold (exit status 1 if one does not). To record the result as the evidence docs/ and README show:
#   python benchmarks/claims_evidence.py record co_demo runs/claims/co && python benchmarks/claims_evidence.py render
claims: setup
	$(BIN)/robustlab demo co --seeds 5 --kernel-paths default,avx2 --out runs/claims/co
	$(BIN)/python benchmarks/claims_evidence.py report runs/claims/co

bench: setup
	$(BIN)/python benchmarks/bench_train_throughput.py
	$(BIN)/python benchmarks/bench_pgd_eval.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
