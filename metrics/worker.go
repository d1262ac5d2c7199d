package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WorkerLabels identify a rank; they label every metric it exports.
type WorkerLabels struct {
	Model string // model_name: the served model id
	Group string // group: the worker group's name
	Role  string // role: "prefill", "decode" or "unified"
	Rank  int    // rank: the tensor-parallel rank in the group
	// Backend is the compute backend and kernel set ("cpu/amx",
	// "cpu/avx512", "cuda", ...): the backend label of
	// tandem:worker_info only, not of every series.
	Backend string
}

func (l WorkerLabels) values() []string {
	return []string{l.Model, l.Group, l.Role, strconv.Itoa(l.Rank)}
}

func (l WorkerLabels) constLabels() prometheus.Labels {
	return prometheus.Labels{"model_name": l.Model, "group": l.Group, "role": l.Role, "rank": strconv.Itoa(l.Rank)}
}

func workerLabelNames() []string { return []string{"model_name", "group", "role", "rank"} }

// Collective operations, the op label of the tandem:collective_* counters.
// They are the nccl.Kind strings, so the worker passes string(call.Kind).
const (
	OpAllReduce = "allreduce"
	OpAllGather = "allgather"
	OpBroadcast = "broadcast"
	OpSend      = "send"
	OpRecv      = "recv"
	OpBarrier   = "barrier"
	// OpOther collects any op not listed above, to bound the label's values.
	OpOther = "other"
)

const (
	opAllReduce = iota
	opAllGather
	opBroadcast
	opSend
	opRecv
	opBarrier
	opOther
	numOps
)

func opIndex(op string) int {
	switch op {
	case OpAllReduce:
		return opAllReduce
	case OpAllGather:
		return opAllGather
	case OpBroadcast:
		return opBroadcast
	case OpSend:
		return opSend
	case OpRecv:
		return opRecv
	case OpBarrier:
		return opBarrier
	}
	return opOther
}

// KV transfer directions, the direction label of tandem:kv_transfer_*.
const (
	DirectionSend = "send" // a prefill rank pushing KV
	DirectionRecv = "recv" // a decode rank receiving KV
)

type flow struct {
	seconds, bytes, count prometheus.Counter
}

func (f *flow) add(bytes int64, d time.Duration) {
	f.count.Inc()
	if bytes > 0 {
		f.bytes.Add(float64(bytes))
	}
	if d > 0 {
		f.seconds.Add(d.Seconds())
	}
}

// Worker holds one rank's metrics. Rank 0 of a group schedules, so it is
// the one to call Requests and KVCache; every rank calls Step,
// Collective and KVTransfer for its own work.
type Worker struct {
	reg    prometheus.Registerer
	labels WorkerLabels

	running, waiting prometheus.Gauge
	kvUsage, kvFree  prometheus.Gauge
	etcd             prometheus.Gauge

	iterTokens          prometheus.Observer
	prefill, decode     prometheus.Counter
	compute, sampleTime prometheus.Observer

	prefixQueries, prefixHits prometheus.Counter
	prefixRate, prefixBlocks  prometheus.Gauge
	lastQueries, lastHits     int64 // the totals PrefixCache was last given

	coll     [numOps]flow
	kv       [2]flow               // DirectionSend, DirectionRecv
	kvTokens [2]prometheus.Counter // prompt tokens whose KV those moved
}

// NewWorker creates a rank's metrics and registers them on reg. It panics
// if they are already registered there, as prometheus.MustRegister does.
func NewWorker(reg prometheus.Registerer, labels WorkerLabels) *Worker {
	names := workerLabelNames()
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, names)
	}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, names)
	}
	counter := func(name, help string, extra string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append(names[:len(names):len(names)], extra))
	}

	running := gauge("tandem:num_requests_running", "Requests in the group's running batch (set by rank 0).")
	waiting := gauge("tandem:num_requests_waiting", "Requests waiting for the group's scheduler (set by rank 0).")
	kvUsage := gauge("tandem:kv_cache_usage_perc", "KV-cache usage: used blocks over all blocks; 1 means 100 percent.")
	kvFree := gauge("tandem:kv_cache_free_blocks", "Free KV-cache blocks.")
	etcd := gauge("tandem:etcd_available", "1 while etcd answers this rank's lease renewals; 0 while it does not (the rank serves on, registered as before).")
	iterTokens := hist("tandem:iteration_tokens_total", "Tokens (prefill and decode rows) per engine step.", iterationTokenBuckets())
	compute := hist("tandem:step_compute_seconds", "Forward-pass time of an engine step, collectives included.", stepBuckets())
	sample := hist("tandem:step_sample_seconds", "Sampling time of an engine step.", stepBuckets())
	stepTokens := counter("tandem:step_tokens_total", "Tokens processed by engine steps, by kind (prefill or decode).", "kind")
	collSec := counter("tandem:collective_seconds_total", "Time spent in collective calls, by op.", "op")
	collBytes := counter("tandem:collective_bytes_total", "Bytes of the caller's buffer passed to collective calls, by op.", "op")
	collCalls := counter("tandem:collective_calls_total", "Collective calls, by op.", "op")
	kvSec := counter("tandem:kv_transfer_seconds_total", "Time spent moving KV cache between groups, by direction.", "direction")
	kvBytes := counter("tandem:kv_transfer_bytes_total", "KV-cache bytes moved between groups, by direction.", "direction")
	kvCount := counter("tandem:kv_transfers_total", "KV-cache transfers (one request's share of this rank), by direction.", "direction")
	kvTokens := counter("tandem:kv_transfer_prompt_tokens_total",
		"Prompt tokens of the requests whose KV this rank moved, by direction; kv_transfer_bytes_total over it is the KV bytes moved per prompt token.", "direction")

	prefixQ := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem:prefix_cache_queries_total",
		Help: "Prompt tokens looked up in the group's prefix cache (set by rank 0)."}, names)
	prefixH := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tandem:prefix_cache_hits_total",
		Help: "Prompt tokens found in the group's prefix cache, not computed (set by rank 0)."}, names)
	prefixRate := gauge("tandem:prefix_cache_hit_rate", "Prefix-cache hits over queries since the group started, in tokens; 0 before any query (set by rank 0).")
	prefixBlocks := gauge("tandem:prefix_cache_blocks", "KV blocks in the prefix cache, in use or not (set by rank 0).")

	// An info series, as vLLM's cache_config_info: 1, with what the rank
	// runs on as a label, for dashboards to join on.
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tandem:worker_info",
		Help: "1, labelled with the rank's compute backend (backend: cpu/amx, cpu/avx512, cuda, ...)."},
		append(names[:len(names):len(names)], "backend"))

	reg.MustRegister(running, waiting, kvUsage, kvFree, etcd, iterTokens, compute, sample, stepTokens,
		collSec, collBytes, collCalls, kvSec, kvBytes, kvCount, kvTokens, prefixQ, prefixH, prefixRate, prefixBlocks, info)

	lv := labels.values()
	with := func(extra string) []string { return append(lv[:len(lv):len(lv)], extra) }
	m := &Worker{
		reg:        reg,
		labels:     labels,
		running:    running.WithLabelValues(lv...),
		waiting:    waiting.WithLabelValues(lv...),
		kvUsage:    kvUsage.WithLabelValues(lv...),
		kvFree:     kvFree.WithLabelValues(lv...),
		etcd:       etcd.WithLabelValues(lv...),
		iterTokens: iterTokens.WithLabelValues(lv...),
		compute:    compute.WithLabelValues(lv...),
		sampleTime: sample.WithLabelValues(lv...),
		prefill:    stepTokens.WithLabelValues(with("prefill")...),
		decode:     stepTokens.WithLabelValues(with("decode")...),

		prefixQueries: prefixQ.WithLabelValues(lv...),
		prefixHits:    prefixH.WithLabelValues(lv...),
		prefixRate:    prefixRate.WithLabelValues(lv...),
		prefixBlocks:  prefixBlocks.WithLabelValues(lv...),
	}
	for i, op := range [numOps]string{OpAllReduce, OpAllGather, OpBroadcast, OpSend, OpRecv, OpBarrier, OpOther} {
		m.coll[i] = flow{
			seconds: collSec.WithLabelValues(with(op)...),
			bytes:   collBytes.WithLabelValues(with(op)...),
			count:   collCalls.WithLabelValues(with(op)...),
		}
	}
	for i, dir := range [2]string{DirectionSend, DirectionRecv} {
		m.kv[i] = flow{
			seconds: kvSec.WithLabelValues(with(dir)...),
			bytes:   kvBytes.WithLabelValues(with(dir)...),
			count:   kvCount.WithLabelValues(with(dir)...),
		}
		m.kvTokens[i] = kvTokens.WithLabelValues(with(dir)...)
	}
	m.etcd.Set(1)
	info.WithLabelValues(with(labels.Backend)...).Set(1)
	return m
}

// EtcdAvailable sets tandem:etcd_available.
func (m *Worker) EtcdAvailable(ok bool) { m.etcd.Set(boolValue(ok)) }

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Step records one engine step: its prefill and decode rows, its forward
// pass (collectives included) and its sampling time. Every rank calls it
// for the steps it executes.
func (m *Worker) Step(prefillTokens, decodeTokens int, compute, sample time.Duration) {
	prefillTokens, decodeTokens = max(prefillTokens, 0), max(decodeTokens, 0)
	m.iterTokens.Observe(float64(prefillTokens + decodeTokens))
	m.prefill.Add(float64(prefillTokens))
	m.decode.Add(float64(decodeTokens))
	m.compute.Observe(compute.Seconds())
	m.sampleTime.Observe(sample.Seconds())
}

// Collective records one collective call: op is an Op* constant (the
// nccl.Kind string; anything else counts as OpOther), bytes the caller's
// buffer, d its duration.
func (m *Worker) Collective(op string, bytes int64, d time.Duration) {
	m.coll[opIndex(op)].add(bytes, d)
}

// Requests sets the scheduler's running and waiting request counts.
func (m *Worker) Requests(running, waiting int) {
	m.running.Set(float64(running))
	m.waiting.Set(float64(waiting))
}

// KVCache sets the KV pool's free blocks and its usage (1 - free/total).
func (m *Worker) KVCache(freeBlocks, totalBlocks int) {
	m.kvFree.Set(float64(freeBlocks))
	usage := 0.0
	if totalBlocks > 0 {
		usage = float64(totalBlocks-freeBlocks) / float64(totalBlocks)
	}
	m.kvUsage.Set(usage)
}

// KVTransfer records one finished KV transfer of this rank: direction is
// DirectionSend or DirectionRecv (any other value is ignored: a transfer
// has only these two ends), bytes the KV bytes moved, d its duration (the
// sender's first chunk to last ack, or the receiver's wait for its share).
func (m *Worker) KVTransfer(direction string, bytes int64, d time.Duration) {
	switch direction {
	case DirectionSend:
		m.kv[0].add(bytes, d)
	case DirectionRecv:
		m.kv[1].add(bytes, d)
	}
}

// KVTransferTokens counts the prompt tokens of a request whose KV this rank
// moved in direction (once per request, however many pushes carried it).
func (m *Worker) KVTransferTokens(direction string, tokens int) {
	switch direction {
	case DirectionSend:
		m.kvTokens[0].Add(float64(tokens))
	case DirectionRecv:
		m.kvTokens[1].Add(float64(tokens))
	}
}

// PrefixCache publishes the group's prefix-cache counters: queries and
// hits are its totals so far, in prompt tokens (rank 0 calls it, with the
// engine's running totals), blocks the blocks it holds.
func (m *Worker) PrefixCache(queries, hits int64, blocks int) {
	if d := queries - m.lastQueries; d > 0 {
		m.prefixQueries.Add(float64(d))
	}
	if d := hits - m.lastHits; d > 0 {
		m.prefixHits.Add(float64(d))
	}
	m.lastQueries, m.lastHits = queries, hits
	if queries > 0 {
		m.prefixRate.Set(float64(hits) / float64(queries))
	}
	m.prefixBlocks.Set(float64(blocks))
}
