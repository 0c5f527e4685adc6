# InterestGraph. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
IG := $(VENV)/bin/ig
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help install redis-up redis-down import backfill apply materialize summary train evaluate-all serve stream replay demo api-demo retrain rollback \
        shop simulate test test-unit test-integration test-fallback bench lint format clean

help: ## list every target
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	touch $@

install: $(VENV)/.installed ## create .venv: torch==2.13.0 (CPU) first, then the pinned lock

redis-up: install ## start the project's redis-server on loopback (no-op if running)
	$(IG) redis up

redis-down: install ## stop the project's redis-server (saves its data)
	$(IG) redis down

import: install ## import the dataset IG_DATASET (default online-retail) to canonical Parquet
	$(IG) import

backfill: install ## compute offline features: Bytewax dataflow over the canonical event log
	$(IG) backfill

apply: install ## feast apply (registers entities, views, services from feature_repo/)
	$(IG) feast apply

materialize: install redis-up ## load the latest offline features into Redis (Feast)
	$(IG) materialize

train: install ## train LightGCN + baselines + text cold start + ranker -> artifacts/latest
	$(IG) train $(TRAIN_ARGS)

retrain: install redis-up ## incremental training: warm-start on the live events and catalogue, serve if not worse on the newest window (RETRAIN_ARGS="--every 15m" to loop)
	$(IG) retrain $(or $(RETRAIN_ARGS),--once)

rollback: install ## serve the artifact served before the current one
	$(IG) rollback

evaluate-all: install ## every model alone and the served list on 4 splits (Online Retail, MovieLens; time cut, leave-last-out), one table
	$(IG) evaluate --all-splits

stream: install redis-up ## run the live feature job (Redis Stream -> Feast online + Parquet)
	$(IG) stream --recovery-dir data/recovery --metrics-port $${IG_STREAM_METRICS_PORT:-9108} $(STREAM_ARGS)

replay: install redis-up ## replay the event log onto the event stream (REPLAY_ARGS="--speed 600")
	$(IG) replay $(REPLAY_ARGS)

serve: install redis-up ## run the API (uvicorn, http://127.0.0.1:8000/docs)
	$(VENV)/bin/uvicorn api.app:create_app --factory --host 127.0.0.1 --port $${IG_API_PORT:-8000}

summary: install ## print rows per table and one user's online features read through Feast
	$(IG) summary

demo: install redis-up import backfill apply materialize summary train api-demo shop ## the whole job, then the shop page until Ctrl-C (SHOP_ARGS="--for 60" to stop by itself)

api-demo: install redis-up ## start the API and print a few real calls and their answers
	$(IG) api-demo

shop: install redis-up ## serve the shop page (API + live job) at /shop/ until Ctrl-C; prints its address
	$(IG) shop $(SHOP_ARGS)

simulate: install ## closed loop: simulated shoppers via the API + live job per policy (SIM_ARGS=)
	$(IG) simulate $(SIM_ARGS)

test: install ## unit + integration tests (integration starts its own redis-server)
	$(PY) -m pytest

test-unit: install ## unit tests only (no network, no Redis)
	$(PY) -m pytest tests/unit

test-integration: install ## integration tests against a real redis-server and Feast
	$(PY) -m pytest tests/integration

test-fallback: install ## live-stream + Redis tests on the bundled Redis 6.2 (a machine without redis-server)
	IG_REDIS_SERVER=bundled $(PY) -m pytest tests/integration/test_live_stream.py tests/integration/test_redis.py tests/unit/core/test_redis_server.py

bench: install ## benchmarks -> bench/results/latest.json
	$(PY) bench/run.py

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff fix and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean: ## remove generated data (keeps .venv); stops redis first
	-$(IG) redis down
	rm -rf data bench/results
