package tandemv1_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

func TestGenerateRequestRoundTrip(t *testing.T) {
	seed := uint64(42)
	addSpecial := false
	reqs := map[string]*tandemv1.GenerateRequest{
		"text": {
			Model:  "tiny",
			Prompt: &tandemv1.GenerateRequest_Text{Text: "Hello, wörld"},
			Sampling: &tandemv1.SamplingParams{
				Temperature: 0.7, TopK: 40, TopP: 0.9, Seed: &seed, MaxTokens: 16,
				Stop: []string{"\n\n"}, StopTokenIds: []int32{2}, IgnoreEos: true,
				Logprobs: true, TopLogprobs: 5,
			},
			AddSpecialTokens: &addSpecial,
			RequestId:        "req-1",
			Timeout:          durationpb.New(1500_000_000),
		},
		"token ids": {
			Prompt:   &tandemv1.GenerateRequest_TokenIds{TokenIds: &tandemv1.TokenIds{Ids: []int32{1, 15043, 0}}},
			Sampling: &tandemv1.SamplingParams{MaxTokens: 1},
		},
	}
	for name, req := range reqs {
		t.Run(name, func(t *testing.T) {
			b, err := proto.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			var got tandemv1.GenerateRequest
			if err := proto.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(req, &got) {
				t.Fatalf("round trip changed the request:\n got  %v\n want %v", &got, req)
			}
		})
	}

	// Presence survives the round trip: an unset seed stays unset, a zero
	// seed stays set.
	var zero uint64
	for _, s := range []*uint64{nil, &zero} {
		b, err := proto.Marshal(&tandemv1.SamplingParams{Seed: s, MaxTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		var got tandemv1.SamplingParams
		if err := proto.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if (got.Seed != nil) != (s != nil) {
			t.Errorf("seed %v came back as %v", s, got.Seed)
		}
	}
}

// TestServices pins each service's methods and streaming kinds, checking
// the descriptors and the generated service descriptions against each other.
func TestServices(t *testing.T) {
	type method struct {
		name                         string
		clientStreams, serverStreams bool
	}
	cases := []struct {
		file    protoreflect.FileDescriptor
		service string
		desc    grpc.ServiceDesc
		methods []method
	}{
		{tandemv1.File_tandem_v1_generation_proto, "Generation", tandemv1.Generation_ServiceDesc, []method{
			{"Generate", false, true},
			{"ListModels", false, false},
			{"Health", false, false},
		}},
		{tandemv1.File_tandem_v1_worker_proto, "Worker", tandemv1.Worker_ServiceDesc, []method{
			{"Prefill", false, false},
			{"Decode", false, true},
			{"Generate", false, true},
			{"Abort", false, false},
			{"Stats", false, false},
			{"KVEvents", false, true},
		}},
		{tandemv1.File_tandem_v1_worker_proto, "KVTransfer", tandemv1.KVTransfer_ServiceDesc, []method{
			{"Push", true, false},
		}},
	}
	for _, c := range cases {
		sd := c.file.Services().ByName(protoreflect.Name(c.service))
		if sd == nil {
			t.Errorf("%s: no service %s", c.file.Path(), c.service)
			continue
		}
		full := "tandem.v1." + c.service
		if string(sd.FullName()) != full || c.desc.ServiceName != full {
			t.Errorf("service named %q in the descriptor, %q in the gRPC description; want %q", sd.FullName(), c.desc.ServiceName, full)
		}
		if got := sd.Methods().Len(); got != len(c.methods) {
			t.Errorf("%s has %d methods, want %d", full, got, len(c.methods))
		}
		streams := map[string]grpc.StreamDesc{}
		for _, s := range c.desc.Streams {
			streams[s.StreamName] = s
		}
		unary := map[string]bool{}
		for _, m := range c.desc.Methods {
			unary[m.MethodName] = true
		}
		for _, want := range c.methods {
			md := sd.Methods().ByName(protoreflect.Name(want.name))
			if md == nil {
				t.Errorf("%s has no method %s", full, want.name)
				continue
			}
			if md.IsStreamingClient() != want.clientStreams || md.IsStreamingServer() != want.serverStreams {
				t.Errorf("%s.%s streams client=%v server=%v, want client=%v server=%v", full, want.name,
					md.IsStreamingClient(), md.IsStreamingServer(), want.clientStreams, want.serverStreams)
			}
			s, isStream := streams[want.name]
			switch {
			case want.clientStreams || want.serverStreams:
				if !isStream || s.ClientStreams != want.clientStreams || s.ServerStreams != want.serverStreams {
					t.Errorf("%s.%s: gRPC description %+v disagrees with the descriptor", full, want.name, s)
				}
			case !unary[want.name]:
				t.Errorf("%s.%s is not a unary method in the gRPC description", full, want.name)
			}
		}
	}
}

// TestSamplingParamsFields pins the names of the fields that map onto
// engine.SamplingParams, so a rename here is a deliberate act.
func TestSamplingParamsFields(t *testing.T) {
	md := (&tandemv1.SamplingParams{}).ProtoReflect().Descriptor()
	want := []string{"temperature", "top_k", "top_p", "seed", "max_tokens", "stop",
		"stop_token_ids", "ignore_eos", "logprobs", "top_logprobs"}
	if got := md.Fields().Len(); got != len(want) {
		t.Errorf("SamplingParams has %d fields, want %d", got, len(want))
	}
	for i, name := range want {
		f := md.Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Errorf("SamplingParams has no field %s", name)
			continue
		}
		if int(f.Number()) != i+1 {
			t.Errorf("SamplingParams.%s is field %d, want %d", name, f.Number(), i+1)
		}
	}
	if !md.Fields().ByName("seed").HasPresence() {
		t.Error("SamplingParams.seed must track presence (unset means a random seed)")
	}
}
