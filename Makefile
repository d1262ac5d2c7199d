# Tandem's build, test and benchmark entry points. `make test` is the one
# command CI runs (.ci/run); `make bench` prints every performance figure
# next to the machine limit it is held against.

GO            ?= go
STATICCHECK   := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHTIME     ?= 3x
BIN           := .bin/tandem

.PHONY: all build test vet lint bench fuzz generate verify-generate clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tandem

# test: vet, staticcheck, then every test (fuzz seeds included).
test: vet lint
	$(GO) test -count=1 ./...

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

lint:
	$(GO) run $(STATICCHECK) ./...

# bench: kernel and engine benchmarks; each prints its figure and the
# limit measured in the same run (memory bandwidth, peak FMA FLOP/s).
bench:
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) ./compute/cpu/ ./engine/

# fuzz: a short run of every fuzz target (FUZZTIME each).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# generate: regenerate checked-in generated code (assembly kernels).
generate:
	$(GO) generate ./...

# verify-generate fails when checked-in generated code is stale.
verify-generate: generate
	@git diff --exit-code -- '*.s' '*_amd64.go' || { echo "generated code is stale: run make generate"; exit 1; }

clean:
	rm -rf .bin
