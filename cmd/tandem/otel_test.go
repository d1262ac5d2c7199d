package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/tandemllm/tandem/telemetry/otlptest"
)

// TestClusterOpenTelemetry: a request whose client sends a W3C trace
// context is traced through the coordinator and every rank of both
// groups into a real OTLP receiver, with the expected parent/child
// structure, GenAI attributes, and step spans linked to the request.
func TestClusterOpenTelemetry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	rcv := otlptest.Start(t)
	tc := startClusterWith(t, "tiny", disaggregated(2, 2), clusterOptions{otlp: rcv.Addr()})
	traceID, clientSpan := "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", "00-"+traceID+"-"+clientSpan+"-01")
	const maxTokens = 6
	g, err := tc.generate(ctx, []int32{464, 2068, 7586, 21831}, greedyParams(maxTokens))
	if err != nil {
		t.Fatal(err)
	}
	inTrace := func(spans []otlptest.Span) []otlptest.Span {
		var out []otlptest.Span
		for _, s := range spans {
			if hex.EncodeToString(s.TraceId) == traceID {
				out = append(out, s)
			}
		}
		return out
	}
	wctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	spans, err := rcv.WaitFor(wctx, func(all []otlptest.Span) bool {
		tr := inTrace(all)
		return len(otlptest.ByName(tr, "tandem.request")) == 1 && len(otlptest.ByName(tr, "prefill")) >= 2 && len(workerRanks(tr)) == 4 &&
			len(otlptest.ByName(tr, "kv_transfer")) == 1 && len(otlptest.ByName(tr, "kv_wait")) == 1 && len(linkedSteps(all, tr)) >= maxTokens-1 &&
			followerSteps(all) > 0 // every rank records its steps as spans; rank 0's link the requests
	})
	if err != nil {
		t.Fatalf("spans of the request did not all arrive: %v", err)
	}
	tr := inTrace(spans)
	req := otlptest.ByName(tr, "tandem.request")[0]
	// client span → the coordinator's Generate server span → tandem.request
	server, ok := spanByID(tr, req.ParentSpanId)
	if !ok || hex.EncodeToString(server.ParentSpanId) != clientSpan {
		t.Fatalf("tandem.request's parent %x is not the Generate call from the client's span %s", req.ParentSpanId, clientSpan)
	}
	for key, want := range map[string]any{
		"gen_ai.request.model": "tiny", "gen_ai.usage.output_tokens": int64(maxTokens),
		"gen_ai.usage.input_tokens": int64(4), "tandem.request.id": g.id,
	} {
		if got, ok := otlptest.Attr(req, key); !ok || got != want {
			t.Errorf("tandem.request %s = %v, want %v", key, got, want)
		}
	}
	services := map[string]bool{}
	for _, s := range tr {
		services[s.Service] = true
	}
	ranks := workerRanks(tr)
	if !services["tandem-coordinator"] || !services["tandem-worker"] {
		t.Fatalf("services in the trace: %v", services)
	}
	// Every rank took part: leaders serve the RPCs; the other ranks push
	// (prefill) or load (decode) their share of the KV under the trace.
	for _, want := range []string{"prefill-0/0", "prefill-0/1", "decode-0/0", "decode-0/1"} {
		if !ranks[want] {
			t.Errorf("no span of rank %s in the trace; ranks %v", want, ranks)
		}
	}
	// The coordinator's prefill span is the ancestor of the worker's.
	var coordPrefill, workerPrefill otlptest.Span
	for _, s := range otlptest.ByName(tr, "prefill") {
		if s.Service == "tandem-coordinator" {
			coordPrefill = s
		} else {
			workerPrefill = s
		}
	}
	if coordPrefill.Span == nil || workerPrefill.Span == nil || !isAncestor(tr, coordPrefill, workerPrefill) {
		t.Fatal("the worker's prefill span does not descend from the coordinator's")
	}
	if !bytes.Equal(coordPrefill.ParentSpanId, req.SpanId) {
		t.Fatal("the coordinator's prefill span is not a child of tandem.request")
	}
}

// followerSteps counts the step spans of ranks other than 0.
func followerSteps(spans []otlptest.Span) int {
	n := 0
	for _, s := range otlptest.ByName(spans, "step") {
		if s.Resource["tandem.rank"] != "0" {
			n++
		}
	}
	return n
}

// workerRanks are the ranks (group/rank) with spans in spans.
func workerRanks(spans []otlptest.Span) map[string]bool {
	ranks := map[string]bool{}
	for _, s := range spans {
		if s.Service == "tandem-worker" {
			ranks[s.Resource["tandem.group"]+"/"+s.Resource["tandem.rank"]] = true
		}
	}
	return ranks
}

// linkedSteps are the step spans (their own traces) linking into tr.
func linkedSteps(all, tr []otlptest.Span) []otlptest.Span {
	ids := map[string]bool{}
	for _, s := range tr {
		ids[string(s.SpanId)] = true
	}
	var out []otlptest.Span
	for _, s := range otlptest.ByName(all, "step") {
		for _, l := range s.Links {
			if ids[string(l.SpanId)] {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

func spanByID(spans []otlptest.Span, id []byte) (otlptest.Span, bool) {
	for _, s := range spans {
		if bytes.Equal(s.SpanId, id) {
			return s, true
		}
	}
	return otlptest.Span{}, false
}

// isAncestor reports whether a is an ancestor of d in spans.
func isAncestor(spans []otlptest.Span, a, d otlptest.Span) bool {
	byID := map[string]otlptest.Span{}
	for _, s := range spans {
		byID[string(s.SpanId)] = s
	}
	for cur, ok := d, true; ok; cur, ok = byID[string(cur.ParentSpanId)] {
		if bytes.Equal(cur.ParentSpanId, a.SpanId) {
			return true
		}
	}
	return false
}
