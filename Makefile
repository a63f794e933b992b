# Kubeflow-on-GKE training platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
JOBGEN := $(VENV)/bin/jobgen
JOB ?=
PYTEST_ARGS ?=

##@ Getting started

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target> [JOB=jobs/x.yaml]\n"} \
	  /^##@/ {printf "\n\033[1m%s\033[0m\n", substr($$0, 5)} \
	  /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: demo
demo: venv bins ## The retraining loop locally: data lands in GCS → watcher → PyTorchJob → DDP training → registry (no cloud, no Docker). DEMO_CLUSTER=containers: real containers on the real node.
ifeq ($(DEMO_CLUSTER),containers)
	hack/images-local.sh
	$(PY) -m jobgen.localcluster.containers_demo $(DEMO_ARGS)
else
	$(PY) -m jobgen.demo $(DEMO_ARGS)
endif

.PHONY: demo-down
demo-down: venv ## Stop what make demo left running (local cluster, emulators).
ifeq ($(DEMO_CLUSTER),containers)
	$(PY) -m jobgen.localcluster.containers_demo down
else
	$(PY) -m jobgen.demo down
endif

.PHONY: test
test: ## Run all tests (lint, unit, integration against the local control plane, real containers, e2e if kind is present).
	$(MAKE) --no-print-directory -j3 --output-sync=target test-prereqs
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

# pytest runs on two xdist workers: tests/watcher (mostly waiting on the Pub/Sub emulator) beside
# the rest (tests/conftest.py); PYTEST_ARGS="-n 0" runs everything in one process.
# What the tests need, in three lanes side by side (on a cold machine the Go lane takes ~20 min of
# CPU, the other two are mostly downloads and disk): the Go builds one after another (each go build
# already uses every core), the virtualenv then lint, and the container images. An image build that
# cannot run here is reported again, with its reason, by tests/containers.
.PHONY: test-prereqs go-builds images-prebuild
test-prereqs: lint go-builds images-prebuild

go-builds:
	hack/build-bins.sh
	hack/build-bins.sh node containerd coredns
	hack/terraform/build-provider.sh

images-prebuild:
	-hack/images-local.sh

##@ Jobs (JOB=jobs/x.yaml; the current kube context, or KUBECONFIG)

.PHONY: render
render: venv ## Print the manifest rendered from JOB.
	@test -n "$(JOB)" || { echo "usage: make render JOB=jobs/x.yaml" >&2; exit 2; }
	@$(JOBGEN) render $(JOB)

.PHONY: validate
validate: venv ## Validate JOB (or every spec in jobs/) offline.
	@$(JOBGEN) validate $(or $(JOB),jobs/*.yaml)

.PHONY: submit
submit: venv ## Render, validate and server-side apply JOB (placeholder image -> the project's trainer at the git sha; IMAGE=... overrides).
	@test -n "$(JOB)" || { echo "usage: make submit JOB=jobs/x.yaml" >&2; exit 2; }
	@JOBGEN=$(JOBGEN) hack/terraform/submit.sh $(JOB)

.PHONY: predict
predict: venv ## Submit the batch prediction JOB (kind BatchPrediction, e.g. jobs/predict/mnist.yaml) as an Indexed Job.
	@test -n "$(JOB)" || { echo "usage: make predict JOB=jobs/predict/x.yaml" >&2; exit 2; }
	@$(JOBGEN) predict $(JOB)

.PHONY: status
status: venv ## Show the state of every PyTorchJob/TFJob and prediction Job in the current namespace.
	@$(JOBGEN) status

.PHONY: watch
watch: venv ## Run the retraining watcher locally (CONFIG=jobs/watcher/watcher.yaml).
	$(JOBGEN) watch --config $(or $(CONFIG),jobs/watcher/watcher.yaml)

##@ Local control plane (no Docker needed)

.PHONY: bins
bins: ## Build the pinned control-plane binaries into the version-keyed cache (cold: minutes; warm: instant).
	hack/build-bins.sh

.PHONY: local-cluster
local-cluster: venv bins ## Start kube-apiserver, etcd, scheduler, controller-manager, kwok GPU nodes and the training-operator.
	$(PY) -m jobgen.localcluster up

.PHONY: local-cluster-real
local-cluster-real: venv bins images-local ## local-cluster plus one real node (containerd, kubelet, kube-proxy, CoreDNS) running containers (root; docs/local-cluster.md).
	$(PY) -m jobgen.localcluster up --real-node

.PHONY: images-local
images-local: ## Build the trainer, tf-trainer and watcher images from their Dockerfiles with buildah (no Docker engine; base images from debootstrap).
	hack/images-local.sh

.PHONY: local-cluster-down
local-cluster-down: venv ## Stop everything local-cluster started.
	$(PY) -m jobgen.localcluster down

.PHONY: operator
operator: ## Install training-operator v1.9.4 (with its webhook) and namespace/RBAC/PriorityClasses into the current context (a real cluster, not the local one).
	kubectl apply --server-side -k manifests

.PHONY: kind-up
kind-up: ## Create a kind cluster (needs Docker) from hack/kind/config.yaml and install manifests/.
	hack/kind/kind.sh up

.PHONY: kind-down
kind-down: ## Delete the kind cluster.
	hack/kind/kind.sh down

##@ GKE (terraform/, docs/terraform.md)

.PHONY: cluster
cluster: ## Create the GPU GKE cluster, buckets, registry, identities, notifications; install operator and watcher.
	hack/terraform/cluster.sh

.PHONY: images
images: ## Build and push images/{trainer,tf-trainer,watcher} tagged with the git sha (BUILDER=cloudbuild|docker).
	hack/terraform/images.sh

.PHONY: destroy
destroy: ## Delete everything make cluster created (asks first; CONFIRM=<cluster name> skips the prompt).
	hack/terraform/destroy.sh

.PHONY: tf-provider
tf-provider: ## Build the google Terraform provider from the Go module proxy into the cache (cold: 8-12 min).
	hack/terraform/build-provider.sh

.PHONY: tf-test
tf-test: tf-provider ## Offline Terraform checks: fmt, validate, terraform test (mocked provider), example plans.
	hack/terraform/test.sh

.PHONY: checkov
checkov: ## Scan terraform/, charts/ and manifests/ with checkov (its own venv in the cache).
	hack/terraform/checkov.sh

##@ Development

.PHONY: venv
venv: $(VENV)/.installed ## Create or update .venv with the package and its test dependencies.

# The trainers install with their CPU test extras: torch 2.15.0 (PyPI's Linux wheel brings its CUDA
# libraries, several GB on a cold machine) and tensorflow-cpu; pip's cache makes later installs quick.
$(VENV)/.installed: pyproject.toml images/trainer/pyproject.toml images/tf-trainer/pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is required, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "venv: installing jobgen, the trainers (torch, tensorflow-cpu) and the test tools; a cold install downloads a few GB"
	$(PY) -m pip install --quiet -e '.[dev]' -e 'images/trainer[test,digits]' -e 'images/tf-trainer[cpu]'
	touch $@

.PHONY: lint
lint: venv ## ruff (lint + format check) over jobgen/, the trainers, tests/ and bench/; mypy --strict over jobgen/ and the trainers.
	$(VENV)/bin/ruff check jobgen images bench tests
	$(VENV)/bin/ruff format --check jobgen images bench tests
	$(VENV)/bin/mypy

.PHONY: lint-images
lint-images: venv ## hadolint the trainer Dockerfiles.
	$(VENV)/bin/hadolint images/trainer/Dockerfile images/tf-trainer/Dockerfile

.PHONY: schema
schema: venv ## Regenerate the committed JSON schemas (job spec, CRDs) after changing jobgen/spec.py.
	$(PY) -m jobgen.schemagen

.PHONY: bench
bench: venv bins ## Run the benchmarks in bench/ (render, trainer, watcher); numbers go to docs/benchmarks.md.
	$(PY) bench/render_bench.py
	$(PY) bench/trainer_bench.py
	$(PY) bench/watcher_bench.py --versions 1000 --copies 10 --latency 50

.PHONY: clean
clean: ## Remove the virtualenv and caches in the work tree (not the binary cache).
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
