# Stratus: `make run` for the dev loop, `make test` for the test suite.
SHELL := /bin/bash
GO ?= go
AZURITE_BIN := Azurite/node_modules/.bin/azurite
DFCLIENT := tests/dfclient/node_modules/durable-functions/package.json

.PHONY: help run test bench azurite dfclient build vet fmt-check lint

help: ## show the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n",$$1,$$2}'

azurite: $(AZURITE_BIN) ## install the pinned Azurite (npm ci in Azurite/)

$(AZURITE_BIN): Azurite/package.json Azurite/package-lock.json
	cd Azurite && npm ci --no-audit --no-fund --loglevel=error
	@touch $(AZURITE_BIN)

dfclient: $(DFCLIENT) ## install the pinned Durable Functions JavaScript client the tests drive (npm ci in tests/dfclient/)

$(DFCLIENT): tests/dfclient/package.json tests/dfclient/package-lock.json
	cd tests/dfclient && npm ci --no-audit --no-fund --loglevel=error
	@touch $(DFCLIENT)

build: ## build the host binary into bin/
	$(GO) build -o bin/stratus ./host

# HOST_ARGS adds host flags to `make run`, e.g. make run HOST_ARGS="--port 7072".
HOST_ARGS ?=

run: azurite ## start Azurite (unless already listening) and run the host on :7071 (keys off)
	@Azurite/start.sh --if-needed
	$(GO) run ./host --no-auth $(HOST_ARGS)

test: azurite dfclient ## gofmt check, go vet, and go test -race against a private Azurite
	@Azurite/test.sh

bench: azurite ## run the benchmarks (BENCH <name> <value> <unit>)
	$(GO) run ./tests/bench
