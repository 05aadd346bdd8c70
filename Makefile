# kube: developer and CI entry points. The logic lives in scripts/.
#   make build       debug build of everything (shared with the tests)
#   make deps        test dependencies (Debian packages, real kubectl/helm)
#   make test        the full test run (.ci/run does this)
#   make run         a local one-node cluster (scripts/run.sh; stop: make stop)
#   make clean-test  remove leftovers of interrupted tests
# Env: KUBE_TEST_CACHE (default .cache), KUBE_TEST_REGISTRY_PORT (default 5000),
#      KUBE_DATA_DIR (default /var/lib/kube, for run).

SHELL := /bin/bash
export KUBE_TEST_CACHE ?= $(CURDIR)/.cache
export KUBE_TEST_REGISTRY_PORT ?= 5000

.PHONY: build deps test run stop clean-test registry images lint-scripts

build:
	cargo build --locked --all-targets

deps:
	scripts/install-test-deps.sh
	scripts/fetch-clients.sh

# scripts/test.sh runs deps itself, starts the registry, builds the images, builds,
# runs cargo test and stops the registry even when the tests fail.
test:
	scripts/test.sh

run:
	scripts/run.sh

stop:
	scripts/run.sh stop

clean-test:
	scripts/clean-test.sh

registry:
	scripts/test-registry.sh start

images: registry
	scripts/build-test-images.sh

lint-scripts:
	shellcheck scripts/*.sh .ci/run
