# Developer entry points. Everything installs what it needs first.
.PHONY: install up down test lint format images bench

UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)

install:
	./scripts/install-system-deps.sh
	$(UV) sync --frozen

up: install
	$(UV) run wgs-dev up

down:
	$(UV) run wgs-dev down

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy libs services providers tests bench

format:
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

test: install
	$(UV) run pytest -q -p no:cacheprovider

images: install
	$(UV) run wgs-dev build-images

bench: install
	$(UV) run python -m bench.lifecycle
	$(UV) run python -m bench.send
	$(UV) run python -m bench.webhooks
	$(UV) run python -m bench.api_events
	$(UV) run python -m bench.sandbox_store
	$(UV) run python -m bench.migrate
