package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Finish reasons, the finished_reason label of tandem:request_success_total.
// They are the OpenAI finish_reason strings the coordinator answers with.
const (
	FinishStop    = "stop"
	FinishLength  = "length"
	FinishAbort   = "abort"
	FinishTimeout = "timeout"
	FinishError   = "error"
)

// Reject reasons, the reason label of tandem:request_rejected_total.
const (
	RejectInvalid     = "invalid"     // validation failed (INVALID_ARGUMENT, NOT_FOUND model)
	RejectDuplicate   = "duplicate"   // a request with the same id is in flight
	RejectQueueFull   = "queue_full"  // beyond --max-in-flight (RESOURCE_EXHAUSTED)
	RejectUnavailable = "unavailable" // no ready group could take it
	RejectCanceled    = "canceled"    // the client went away before it started
	RejectDeadline    = "deadline"    // its deadline passed before it started
	RejectOverloaded  = "overloaded"  // started, but its group refused it before any token (--queue-timeout passed, no room)
)

// Migration reasons, the reason label of tandem:request_migrations_total:
// why a group failed a request that then moved to other groups.
const (
	MigrationUnavailable = "unavailable"  // a worker call failed UNAVAILABLE: the process is gone or its group is down
	MigrationGroupLeft   = "group_left"   // the group left the cluster (its lease expired)
	MigrationStreamEnded = "stream_ended" // a worker stream ended without a finish reason
	MigrationAborted     = "aborted"      // the worker ended the request itself (CANCELLED, ABORTED)
)

// Coordinator holds the request-level metrics the coordinator exports.
//
// A request moves through the gauges like this: RequestArrived counts it
// waiting; then exactly one of Rejected (it never started) or
// RequestStarted (it is running); after RequestStarted exactly one of
// RequestFinished or Refused (its group refused it before any token). Keeping to that keeps the gauges exact.
type Coordinator struct {
	waiting, running prometheus.Gauge
	etcd             prometheus.Gauge

	queue, ttft, itl, tpot, e2e prometheus.Observer
	reqPrompt, reqGen           prometheus.Observer

	promptTokens, genTokens prometheus.Counter

	success  *prometheus.CounterVec
	finished [numFinish]prometheus.Counter
	rejected *prometheus.CounterVec
	reject   [numReject]prometheus.Counter
	migrated *prometheus.CounterVec

	resyncs *prometheus.CounterVec
	// unauthenticated counts refusals for want of an API key: [0] HTTP,
	// [1] gRPC. The label is the API, never anything the client sent.
	unauthenticated [2]prometheus.Counter
	indexBlocks     *prometheus.GaugeVec
	routedHits      prometheus.Counter
}

const (
	finishStop = iota
	finishLength
	finishAbort
	finishTimeout
	finishError
	numFinish
)

func finishIndex(reason string) int {
	switch reason {
	case FinishStop:
		return finishStop
	case FinishLength:
		return finishLength
	case FinishAbort:
		return finishAbort
	case FinishTimeout:
		return finishTimeout
	case FinishError:
		return finishError
	}
	return -1
}

const (
	rejectInvalid = iota
	rejectDuplicate
	rejectQueueFull
	rejectUnavailable
	rejectCanceled
	rejectDeadline
	rejectOverloaded
	numReject
)

func rejectIndex(reason string) int {
	switch reason {
	case RejectInvalid:
		return rejectInvalid
	case RejectDuplicate:
		return rejectDuplicate
	case RejectQueueFull:
		return rejectQueueFull
	case RejectUnavailable:
		return rejectUnavailable
	case RejectCanceled:
		return rejectCanceled
	case RejectDeadline:
		return rejectDeadline
	case RejectOverloaded:
		return rejectOverloaded
	}
	return -1
}

// NewCoordinator creates the coordinator's metrics for the served model
// and registers them on reg. It panics if they are already registered
// there, as prometheus.MustRegister does: that is a wiring bug.
func NewCoordinator(reg prometheus.Registerer, model string) *Coordinator {
	labels := []string{"model_name"}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	hist := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}

	waiting := gauge("tandem:num_requests_waiting", "Requests admitted by the coordinator and not yet started.")
	running := gauge("tandem:num_requests_running", "Requests started and not yet finished, cluster-wide.")
	etcd := gauge("tandem:etcd_available", "1 while etcd answers the coordinator; 0 while it does not (the groups known stay as they were).")
	queue := hist("tandem:request_queue_time_seconds", "Time from a request's arrival to its start.", requestLatencyBuckets())
	ttft := hist("tandem:time_to_first_token_seconds", "Time from a request's arrival to its first token.", ttftBuckets())
	itl := hist("tandem:inter_token_latency_seconds", "Time between consecutive tokens of a request.", tokenLatencyBuckets())
	tpot := hist("tandem:time_per_output_token_seconds", "Mean time per output token after the first, per request.", tokenLatencyBuckets())
	e2e := hist("tandem:e2e_request_latency_seconds", "Time from a request's arrival to its last token.", requestLatencyBuckets())
	reqPrompt := hist("tandem:request_prompt_tokens", "Prompt tokens per finished request.", requestTokenBuckets())
	reqGen := hist("tandem:request_generation_tokens", "Generated tokens per finished request.", requestTokenBuckets())
	promptTokens := counter("tandem:prompt_tokens_total", "Prompt tokens of finished requests.")
	genTokens := counter("tandem:generation_tokens_total", "Generated tokens of finished requests.")
	success := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem:request_success_total",
		Help: "Finished requests by finish reason.",
	}, []string{"model_name", "finished_reason"})
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem:request_rejected_total",
		Help: "Requests refused before they started, by reason.",
	}, []string{"model_name", "reason"})

	migrated := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem:request_migrations_total",
		Help: "Requests moved to other groups after a group failed them, by reason.",
	}, []string{"model_name", "reason"})

	resyncs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem:kv_events_resyncs_total",
		Help: "Full resynchronisations of a group's prefix index, after a gap in its KV events or a broken event stream, by group.",
	}, []string{"model_name", "group"})
	indexBlocks := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tandem:kv_index_blocks",
		Help: "KV blocks the coordinator's prefix index believes each group holds in its prefix cache.",
	}, []string{"model_name", "group"})
	routedHits := counter("tandem:routed_prefix_tokens_total",
		"Prompt tokens the chosen groups held in their prefix caches when requests were routed, as the prefix index saw them.")
	unauthenticated := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tandem:unauthenticated_requests_total",
		Help: "Requests refused for want of a valid API key (HTTP 401, gRPC UNAUTHENTICATED), by API: http or grpc.",
	}, []string{"model_name", "api"})

	reg.MustRegister(waiting, running, etcd, queue, ttft, itl, tpot, e2e, reqPrompt, reqGen,
		promptTokens, genTokens, success, rejected, migrated, resyncs, indexBlocks, routedHits, unauthenticated)

	m := &Coordinator{
		waiting:      waiting.WithLabelValues(model),
		running:      running.WithLabelValues(model),
		etcd:         etcd.WithLabelValues(model),
		queue:        queue.WithLabelValues(model),
		ttft:         ttft.WithLabelValues(model),
		itl:          itl.WithLabelValues(model),
		tpot:         tpot.WithLabelValues(model),
		e2e:          e2e.WithLabelValues(model),
		reqPrompt:    reqPrompt.WithLabelValues(model),
		reqGen:       reqGen.WithLabelValues(model),
		promptTokens: promptTokens.WithLabelValues(model),
		genTokens:    genTokens.WithLabelValues(model),
		success:      success.MustCurryWith(prometheus.Labels{"model_name": model}),
		rejected:     rejected.MustCurryWith(prometheus.Labels{"model_name": model}),
		migrated:     migrated.MustCurryWith(prometheus.Labels{"model_name": model}),
		resyncs:      resyncs.MustCurryWith(prometheus.Labels{"model_name": model}),
		indexBlocks:  indexBlocks.MustCurryWith(prometheus.Labels{"model_name": model}),
		routedHits:   routedHits.WithLabelValues(model),
		unauthenticated: [2]prometheus.Counter{
			unauthenticated.WithLabelValues(model, "http"), unauthenticated.WithLabelValues(model, "grpc"),
		},
	}
	// Resolve the known reasons now: no lookup on the finish path, and
	// their series exist at 0 from the start, so rate() sees the first one.
	for _, r := range [...]string{FinishStop, FinishLength, FinishAbort, FinishTimeout, FinishError} {
		m.finished[finishIndex(r)] = m.success.WithLabelValues(r)
	}
	for _, r := range [...]string{RejectInvalid, RejectDuplicate, RejectQueueFull, RejectUnavailable, RejectCanceled, RejectDeadline, RejectOverloaded} {
		m.reject[rejectIndex(r)] = m.rejected.WithLabelValues(r)
	}
	m.etcd.Set(1)
	for _, r := range [...]string{MigrationUnavailable, MigrationGroupLeft, MigrationStreamEnded, MigrationAborted} {
		m.migrated.WithLabelValues(r)
	}
	return m
}

// Unauthenticated counts a request refused for want of a valid API key
// on api, "http" or "grpc".
func (m *Coordinator) Unauthenticated(api string) {
	if api == "grpc" {
		m.unauthenticated[1].Inc()
		return
	}
	m.unauthenticated[0].Inc()
}

// RequestArrived counts a new request as waiting.
func (m *Coordinator) RequestArrived() { m.waiting.Inc() }

// RequestStarted moves a waiting request to running and records how long
// it waited (arrival to dispatch to its first group).
func (m *Coordinator) RequestStarted(queue time.Duration) {
	m.waiting.Dec()
	m.running.Inc()
	m.queue.Observe(queue.Seconds())
}

// Rejected ends a waiting request that never started. Use the Reject*
// constants; another reason gets its own series (a lookup, and an
// allocation the first time).
func (m *Coordinator) Rejected(reason string) {
	m.waiting.Dec()
	m.countRejected(reason)
}

func (m *Coordinator) countRejected(reason string) {
	if i := rejectIndex(reason); i >= 0 {
		m.reject[i].Inc()
		return
	}
	m.rejected.WithLabelValues(reason).Inc()
}

// Refused ends a running request that its group refused before any
// token (RejectOverloaded): it counts as rejected, not finished.
func (m *Coordinator) Refused(reason string) {
	m.running.Dec()
	m.countRejected(reason)
}

// FirstToken records a request's time to first token, from its arrival.
func (m *Coordinator) FirstToken(ttft time.Duration) { m.ttft.Observe(ttft.Seconds()) }

// Token records the time since the request's previous token; call it for
// every token after the first.
func (m *Coordinator) Token(itl time.Duration) { m.itl.Observe(itl.Seconds()) }

// RequestFinished ends a running request: e2e is arrival to last token,
// tpot the mean time per output token after the first ((e2e - ttft) /
// (completionTokens - 1)); tpot is recorded only when completionTokens > 1,
// as vLLM does. finishReason is one of the Finish* constants (another
// reason gets its own series).
func (m *Coordinator) RequestFinished(e2e time.Duration, promptTokens, completionTokens int, finishReason string, tpot time.Duration) {
	m.running.Dec()
	m.e2e.Observe(e2e.Seconds())
	if completionTokens > 1 {
		m.tpot.Observe(tpot.Seconds())
	}
	promptTokens, completionTokens = max(promptTokens, 0), max(completionTokens, 0)
	m.reqPrompt.Observe(float64(promptTokens))
	m.reqGen.Observe(float64(completionTokens))
	m.promptTokens.Add(float64(promptTokens))
	m.genTokens.Add(float64(completionTokens))
	if i := finishIndex(finishReason); i >= 0 {
		m.finished[i].Inc()
		return
	}
	m.success.WithLabelValues(finishReason).Inc()
}

// Migrated counts a request moved to other groups; reason is one of the
// Migration* constants. Migrations are rare, so the lookup is no cost.
func (m *Coordinator) Migrated(reason string) { m.migrated.WithLabelValues(reason).Inc() }

// EtcdAvailable sets tandem:etcd_available.
func (m *Coordinator) EtcdAvailable(ok bool) { m.etcd.Set(boolValue(ok)) }

// KVResync counts a full resynchronisation of group's prefix index.
func (m *Coordinator) KVResync(group string) { m.resyncs.WithLabelValues(group).Inc() }

// KVIndexGroup makes group's index series exist (at 0), so rate() sees
// its first resync; call it when the group appears.
func (m *Coordinator) KVIndexGroup(group string) {
	m.resyncs.WithLabelValues(group)
	m.indexBlocks.WithLabelValues(group).Set(0)
}

// KVIndexBlocks sets the blocks the prefix index holds for group.
func (m *Coordinator) KVIndexBlocks(group string, blocks int) {
	m.indexBlocks.WithLabelValues(group).Set(float64(blocks))
}

// KVIndexForget drops group's series when it leaves.
func (m *Coordinator) KVIndexForget(group string) {
	m.indexBlocks.DeleteLabelValues(group)
	m.resyncs.DeleteLabelValues(group)
}

// RoutedPrefix counts the prompt tokens the group a request was routed to
// held in its prefix cache.
func (m *Coordinator) RoutedPrefix(tokens int) { m.routedHits.Add(float64(tokens)) }
