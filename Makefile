# corepin build and test entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# Builds of containerd and Kubernetes take minutes: they are cached outside the
# checkout, keyed by version, so a fresh clone on the same machine reuses them.
export COREPIN_CACHE ?= $(HOME)/.cache/corepin
FUZZTIME ?= 10s
PKGS := ./...

.PHONY: all build test test-unit test-integration bench lint demo demo-down tools tools-containerd tools-kube images clean fuzz

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

test: lint test-unit test-integration

test-unit:
	$(GO) test -count=1 -race $(PKGS)

# Each fuzz target for a few seconds on top of its seed corpus (which
# test-unit already runs).
fuzz:
	hack/fuzz-all.sh $(FUZZTIME)

tools: tools-containerd tools-kube

tools-containerd:
	hack/tools-containerd.sh

tools-kube:
	hack/tools-kube.sh

test-integration: build tools
	$(GO) test -count=1 -tags integration -timeout 40m ./test/integration/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./policy/ ./scheduler-extender/

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(COREPIN_CACHE)/staticcheck-$(STATICCHECK_VERSION)/bin/staticcheck

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

demo:
	@echo "make demo: the end-to-end demo cluster is not built yet (issue 5)." >&2; exit 1

demo-down:
	@echo "make demo-down: nothing to tear down yet." >&2

clean:
	rm -rf $(BIN)
