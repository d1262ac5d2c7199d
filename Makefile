# Tandem's build, test and benchmark entry points. `make test` is the one
# command CI runs (.ci/run); `make bench` prints every performance figure
# next to the machine limit it is held against.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHTIME     ?= 3x
BIN           := .bin/tandem

.PHONY: all build test vet lint bench fuzz chaos generate verify-generate proto verify-proto chart-test chart-e2e image gpu-check-prep clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tandem

# test: vet, staticcheck, the chart's tests, the assembly generator's own
# checks, then every test (fuzz seeds included).
test: vet lint verify-proto chart-test verify-generate
	$(GO) test -count=1 -timeout 10m ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

# chart-test: the Helm chart (deploy/helm/tandem) linted and rendered with
# Helm's Go SDK over its ci/ values files, every object decoded strictly
# into its API type and every tandem container's arguments parsed by the
# binary's own command tree; bad values files must fail the schema. They
# are tests of cmd/tandem (chart*_test.go), so go test ./cmd/tandem runs
# them too: a flag renamed in the binary fails there at once.
chart-test:
	$(GO) test -count=1 -run '^TestChart' ./cmd/tandem/

# chart-e2e: the same releases server-side-applied (dry run, strict field
# validation) to a real kube-apiserver, built once from the k8s.io/kubernetes
# version pinned in hack/kube-apiserver/go.mod into .bin/, on the embedded
# etcd, with prometheus-operator's ServiceMonitor CRD (from its module).
KUBE_VERSION   := $(shell sed -n 's/^require k8s.io\/kubernetes //p' hack/kube-apiserver/go.mod)
KUBE_APISERVER := .bin/kube-apiserver-$(KUBE_VERSION)
PROMETHEUS_OPERATOR_VERSION := v0.90.1
$(KUBE_APISERVER): hack/kube-apiserver/go.mod hack/kube-apiserver/go.sum
	@echo "building kube-apiserver $(KUBE_VERSION) (several minutes the first time)"
	cd hack/kube-apiserver && $(GO) build -trimpath -o $(CURDIR)/$@ k8s.io/kubernetes/cmd/kube-apiserver
chart-e2e: $(KUBE_APISERVER)
	@dir=$$(cd / && $(GO) mod download -json github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p') && \
	test -n "$$dir" && \
	TANDEM_REQUIRE_KUBE_APISERVER=1 TANDEM_KUBE_APISERVER=$(CURDIR)/$(KUBE_APISERVER) \
	TANDEM_SERVICEMONITOR_CRD=$$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
	$(GO) test -count=1 -v -run '^TestChartAppliesToAPIServer$$' ./cmd/tandem/

# image: the CPU and GPU (CUDA) images from deploy/container/Dockerfile,
# with docker or podman.
IMAGE     ?= tandem
IMAGE_TAG ?= dev
CONTAINER ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
image:
	@test -n "$(CONTAINER)" || { echo "make image needs docker or podman"; exit 1; }
	$(CONTAINER) build -f deploy/container/Dockerfile --target cpu -t $(IMAGE):$(IMAGE_TAG) .
	$(CONTAINER) build -f deploy/container/Dockerfile --target cuda -t $(IMAGE):$(IMAGE_TAG)-cuda .

# bench: every performance figure, each printed next to the limit it is
# held against and measured in the same run: kernels and engine (memory
# bandwidth, peak FMA FLOP/s, the AMX tile peak on the amx set),
# collectives and KV transfer (raw loopback TCP), coordinator overhead
# (1 ms), tracing cost (2%) and the --link profiles (their rates; needs
# root and iproute2).
BENCH_PKGS := ./compute/cpu/ ./engine/ ./nccl/ring/ ./kvtransfer/ ./tracing/ ./worker/ ./cmd/tandem/ ./netshape/
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) $(BENCH_PKGS)

# chaos: the long run of the chaos suite (package chaos): a cluster of
# real processes under CHAOS_REQUESTS requests at CHAOS_RATE per second
# while CHAOS_FAULTS faults run one after another; it prints the report
# (requests completed, failed by reason, hung, lost; KV blocks at the end;
# time to recover per fault kind; every goal met or missed; the seed,
# which CHAOS_SEED=N replays, 0 drawing a new one) and writes it as JSON
# to .bin/chaos/, with every process's output. The groups are supervised
# with tandem up's defaults. `make test` runs a short one.
CHAOS_REQUESTS ?= 2000
CHAOS_FAULTS   ?= 24
CHAOS_RATE     ?= 8
CHAOS_SEED     ?= 0
chaos:
	@mkdir -p .bin/chaos
	$(GO) test -count=1 -timeout 60m -run '^TestChaos$$' -v ./chaos -args \
	  -chaos.requests $(CHAOS_REQUESTS) -chaos.faults $(CHAOS_FAULTS) -chaos.rate $(CHAOS_RATE) -chaos.seed $(CHAOS_SEED) \
	  -chaos.report $(CURDIR)/.bin/chaos/report.json -chaos.log $(CURDIR)/.bin/chaos/processes.log

# fuzz: a short run of every fuzz target (FUZZTIME each). New interesting
# inputs are minimized for FUZZMINIMIZETIME at most, so that the targets
# whose inputs cost a network exchange spend their time fuzzing.
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 5s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg || exit 1; \
	  done; \
	done

# generate: regenerate checked-in generated code (assembly kernels).
generate:
	$(GO) generate ./...

# verify-generate fails when checked-in generated code is stale, or when
# the generator (a module of its own, which ./... does not reach) fails
# its gofmt, vet or tests.
verify-generate: generate
	@git diff --exit-code -- '*.s' '*_amd64.go' || { echo "generated code is stale: run make generate"; exit 1; }
	@test -z "$$(gofmt -l compute/cpu/internal/asmgen)" || { echo "gofmt needed:"; gofmt -l compute/cpu/internal/asmgen; exit 1; }
	$(GO) vet -C compute/cpu/internal/asmgen ./...
	$(GO) test -C compute/cpu/internal/asmgen -count=1 ./...

# proto: lint and format-check proto/**/*.proto, then regenerate the
# checked-in Go code (proto/tandem/v1/*.pb.go). The tools are built from
# source at the pinned versions below, through the Go module proxy, into
# .bin/tools/NAME@VERSION (once per version); no protoc binary and no
# remote plugin is used.
BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOOLS              := $(CURDIR)/.bin/tools
BUF                := $(TOOLS)/buf@$(BUF_VERSION)/buf
PROTOC_GEN_GO      := $(TOOLS)/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)/protoc-gen-go
PROTOC_GEN_GO_GRPC := $(TOOLS)/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)/protoc-gen-go-grpc
PROTO_TOOLS        := $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GO_GRPC)
# BUF_GENERATE runs in proto/ with the pinned plugins first on PATH.
BUF_GENERATE       := PATH="$(dir $(PROTOC_GEN_GO)):$(dir $(PROTOC_GEN_GO_GRPC)):$$PATH" $(BUF) generate

$(BUF):
	GOBIN=$(@D) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(PROTOC_GEN_GO):
	GOBIN=$(@D) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(PROTOC_GEN_GO_GRPC):
	GOBIN=$(@D) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: $(PROTO_TOOLS)
	cd proto && $(BUF) lint && $(BUF) format --diff --exit-code
	find proto -name '*.pb.go' -delete
	cd proto && $(BUF_GENERATE)

# verify-proto fails when the generated code in proto/ (in CI: the checked-in
# code) is not exactly what the pinned tools make from the .proto files:
# it generates into a temporary directory and compares, touching nothing.
# Its fix is `make proto`.
verify-proto: $(PROTO_TOOLS)
	cd proto && $(BUF) lint && $(BUF) format --diff --exit-code
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd proto && $(BUF_GENERATE) -o "$$tmp" && \
	stale=0 && for f in $$( { find . -name '*.pb.go'; cd "$$tmp" && find . -name '*.pb.go'; } | sort -u); do \
	  diff -u -N --label "proto/$${f#./} (in tree)" --label "proto/$${f#./} (generated)" "$$f" "$$tmp/$$f" || stale=1; \
	done && \
	if [ $$stale = 1 ]; then echo "verify-proto: the generated code in proto/ is stale (diff above): run make proto and commit it"; exit 1; fi

# gpu-check-prep: everything one device call needs for the GPU check,
# under .bin/gpu (stripped, gzipped tandem and test binaries, CPU
# references); docs/benchmarking.md, "GPU check".
gpu-check-prep:
	scripts/gpu-check --prep

clean:
	rm -rf .bin
