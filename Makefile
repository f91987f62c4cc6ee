# corepin build and test entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
# Builds of containerd and Kubernetes take minutes: they are cached outside the
# checkout, keyed by version, so a fresh clone on the same machine reuses them.
export COREPIN_CACHE ?= $(HOME)/.cache/corepin
FUZZTIME ?= 10s
PKGS := ./...

.PHONY: all build test test-unit test-integration test-e2e test-kind test-kind-oldest test-chart kind-image kind-up kind-down bench bench-isolation lint demo demo-down deps tools tools-containerd tools-kube tools-kind images images-local clean fuzz

all: build

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

test: lint test-unit test-chart test-integration test-e2e test-kind

test-unit:
	$(GO) test -count=1 -race $(PKGS)

# Each fuzz target for a few seconds on top of its seed corpus (which
# test-unit already runs).
fuzz:
	hack/fuzz-all.sh $(FUZZTIME)

tools: tools-containerd tools-kube

tools-kind:
	hack/tools-kind.sh

tools-containerd:
	hack/tools-containerd.sh

tools-kube:
	hack/tools-kube.sh

test-integration: build tools
	$(GO) test -count=1 -tags integration -timeout 40m ./test/integration/...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./policy/ ./scheduler-extender/

# PostgreSQL beside noisy neighbours on the cluster of hack/cluster.sh,
# pinned by corepin and by the kubelet's static policy (docs/benchmarks.md);
# not part of `make test`. Run it under the test bed's lock on shared machines.
bench-isolation: deps tools images-local
	hack/bench-isolation.sh

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(COREPIN_CACHE)/staticcheck-$(STATICCHECK_VERSION)/bin/staticcheck

$(STATICCHECK):
	GOBIN=$(dir $(STATICCHECK)) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

# Container images of the plugin, the extender and corepin-placer, as tarballs in bin/images
# (importable with `ctr -n k8s.io images import` or `kind load image-archive`).
images: build
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/workload ./test/images/workload
	$(GO) run ./hack/images --bin $(BIN) --out $(BIN)/images

# The same plus what a cluster that cannot pull needs: pause, the example
# workload, and kube-scheduler for the corepin-scheduler Deployment.
images-local: images tools-kube
	$(GO) run ./hack/images --bin $(BIN) --out $(BIN)/images --local \
	  --kube-bin $(COREPIN_CACHE)/kube-$(KUBE_VERSION)/bin --kube-version $(KUBE_VERSION)

KUBE_VERSION = $(shell cd hack/tools/kube && $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes)

# A real single-node cluster with corepin installed from deploy/local, and
# the examples running on it; it stays up until `make demo-down`.
demo: deps tools images-local
	hack/cluster.sh up
	hack/demo.sh

demo-down:
	hack/cluster.sh down

# The e2e suite against that cluster (brought up and down around it).
test-e2e: deps tools images-local
	hack/cluster.sh up
	$(GO) test -count=1 -tags e2e -timeout 20m ./test/e2e/... ; rc=$$?; hack/cluster.sh down; exit $$rc

HELM_VERSION = $(shell cd hack/tools/helm && $(GO) list -m -f '{{.Version}}' helm.sh/helm/v3)
HELM := $(COREPIN_CACHE)/helm-$(HELM_VERSION)/bin/helm

# The Helm chart (deploy/chart): `helm lint --strict`, and it renders what
# `kubectl apply -k deploy/` does.
test-chart:
	hack/tools-helm.sh
	HELM=$(HELM) $(GO) test -count=1 -tags chart ./deploy/chart/...

# The kind test bed (contract section 11): a node image built here without a
# registry (cached in Docker's store by Kubernetes, containerd and kind
# version), a cluster of one control plane and two workers with corepin
# installed by Helm, and the e2e suite against it. Docker is installed and
# started when missing, and stopped again by kind-down.
# CONTAINERD_VERSION=v2.1.9 (for example) builds the node image with another
# containerd than the one the tools module pins.
kind-image: deps tools tools-kind images-local
	hack/tools-helm.sh
	hack/tools-containerd.sh
	hack/docker.sh ensure
	hack/kind-image.sh

kind-up: kind-image
	hack/kind.sh up

kind-down:
	hack/kind.sh down

test-kind: kind-image
	hack/kind.sh down
	hack/kind.sh up
	hack/kind.sh test; rc=$$?; hack/kind.sh down; exit $$rc

# The same on the oldest supported Kubernetes (its tools and node image are
# built and cached beside the default's; not in `make test`, for CI's time).
KIND_OLDEST_KUBERNETES ?= v1.35.4
test-kind-oldest:
	$(MAKE) test-kind KUBERNETES_VERSION=$(KIND_OLDEST_KUBERNETES)

# Packages a fresh Debian machine lacks.
deps:
	@command -v openssl >/dev/null && command -v runc >/dev/null && command -v jq >/dev/null && command -v mmdebstrap >/dev/null || \
	  (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq openssl runc jq mmdebstrap >/dev/null)

clean:
	rm -rf $(BIN)
