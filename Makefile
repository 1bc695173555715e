# `make demo` and `make test` work on a fresh machine: they build .venv and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit bench system-deps redis clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: a bare `torch` pulls a CUDA build of several GB (../shared/OFFLINE.md)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[export,quantize,dev]'
	touch $(STAMP)

# strace proves no plaintext is written; espeak-ng + sox make test speech
SYSTEM_TOOLS := strace espeak-ng sox
system-deps:
	@missing=""; for t in $(SYSTEM_TOOLS); do command -v $$t >/dev/null || missing="$$missing $$t"; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get install -y -q $$missing || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing); \
	fi

redis:
	@$(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_connect_timeout=2).ping()" 2>/dev/null \
		|| redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		   --dir /var/lib/redis --logfile /var/log/redis/ci.log
	@for i in 1 2 3 4 5 6 7 8 9 10; do \
		$(BIN)/python -c "import redis; redis.Redis(host='127.0.0.1', port=6379).ping()" 2>/dev/null && exit 0; sleep 1; \
	done; echo "Redis is not answering on 127.0.0.1:6379" >&2; exit 1

# the demo also makes the INT8 version (int8-hybrid) on espeak-ng speech and transcribes with it
DEMO_SPEECH := .cache/demo-speech
demo: $(STAMP) system-deps
	$(BIN)/python -m benchmarks.speech --demo-sets $(DEMO_SPEECH)
	$(BIN)/ovbatch demo --calibration $(DEMO_SPEECH)/calibration --eval $(DEMO_SPEECH)/evaluation

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy checks the package as installed (cli/, tasks/, workers/ mapped into ovbatch/), not the folders
typecheck: $(STAMP)
	rm -rf .cache/typecheck
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --target .cache/typecheck .
	$(BIN)/mypy .cache/typecheck/ovbatch

# pytest-xdist: PYTEST_WORKERS processes, each given whole test files (a module's fixtures are built
# once), in the order tests/conftest.py gives (the longest files first, so none is left to run alone
# at the end); PYTEST_WORKERS=0 runs them in this process. Tests marked `serial` (they time two tools
# against each other, or count other processes' CPU) then run alone; both passes always run.
PYTEST_WORKERS ?= 2
unit: $(STAMP) system-deps redis
	$(BIN)/pytest -q --durations=25 -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial"; \
	parallel=$$?; \
	$(BIN)/pytest -q --durations=5 -m serial; \
	serial=$$?; \
	test $$parallel = 0 -a $$serial = 0 || { echo "make unit: parallel pass exited $$parallel, serial pass $$serial" >&2; exit 1; }

test: lint typecheck unit

bench: $(STAMP) system-deps redis
	$(BIN)/python benchmarks/crypto_throughput.py --mib 512 --repeats 5
	$(BIN)/python benchmarks/cold_load.py --repeats 9
	$(BIN)/python -m benchmarks.transcribe_bench
	$(BIN)/python -m benchmarks.engines_bench
	$(BIN)/python -m benchmarks.engine_ablation
	$(BIN)/python -m benchmarks.worker_rss
	$(BIN)/python -m benchmarks.wer_noise
	$(BIN)/python -m benchmarks.imagegen_bench
	$(BIN)/python -m benchmarks.precision_bench
	$(BIN)/python -m benchmarks.quantize_bench --home $(CURDIR)/.cache/bench-quantize
	$(BIN)/python -m benchmarks.quantize_diffusion_bench --tiny
	$(BIN)/python -m benchmarks.transcribe_bench --int8 --skip-torch --rss-jobs 0 --txt 3 --accuracy --wide 2
	$(BIN)/python -m benchmarks.window_ends --rounds 2 --alone
	$(BIN)/python -m benchmarks.benchmark_parity --time 10 --rounds 3
	$(BIN)/python -m benchmarks.pipeline_bench --int8 --images real
	$(BIN)/python -m benchmarks.fault_suite all
	$(BIN)/python -m benchmarks.bad_inputs --home $(CURDIR)/.cache/bench-bad-inputs
	$(BIN)/python -m benchmarks.scale

clean:
	rm -rf build dist .cache/typecheck *.egg-info
