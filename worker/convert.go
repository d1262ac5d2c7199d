package worker

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/kvtransfer"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// samplingParams converts the wire parameters; stop strings are the
// coordinator's business and are not passed to the engine.
func samplingParams(p *tandemv1.SamplingParams) (engine.SamplingParams, error) {
	if p == nil {
		return engine.SamplingParams{}, status.Error(codes.InvalidArgument, "sampling: required")
	}
	sp := engine.SamplingParams{
		Temperature:  p.GetTemperature(),
		TopK:         int(p.GetTopK()),
		TopP:         p.GetTopP(),
		MaxTokens:    int(p.GetMaxTokens()),
		StopTokenIDs: p.GetStopTokenIds(),
		IgnoreEOS:    p.GetIgnoreEos(),
		Logprobs:     p.GetLogprobs(),
		TopLogprobs:  int(p.GetTopLogprobs()),
	}
	if p.Seed != nil {
		seed := p.GetSeed()
		sp.Seed = &seed
	}
	if err := sp.Validate(); err != nil {
		return sp, status.Errorf(codes.InvalidArgument, "sampling: %v", err)
	}
	return sp, nil
}

// statusOf maps engine errors to gRPC statuses.
func statusOf(err error) error {
	switch {
	case err == nil:
		return nil
	case status.Code(err) != codes.Unknown:
		return err
	case errors.Is(err, engine.ErrInvalidRequest), errors.Is(err, engine.ErrInvalidParams):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, engine.ErrOutOfBlocks):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, engine.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, errGroupDown):
		return status.Error(codes.Unavailable, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// finishReason is the engine's finish reason on the wire.
func finishReason(r engine.FinishReason) tandemv1.FinishReason {
	switch r {
	case engine.FinishStop:
		return tandemv1.FinishReason_FINISH_REASON_STOP
	case engine.FinishLength:
		return tandemv1.FinishReason_FINISH_REASON_LENGTH
	case engine.FinishAbort:
		return tandemv1.FinishReason_FINISH_REASON_ABORT
	}
	return tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED
}

func tokenLogprobs(o *engine.Output) *tandemv1.TokenLogprobs {
	if o.Logprob == nil {
		return nil
	}
	lp := &tandemv1.TokenLogprobs{Chosen: &tandemv1.Logprob{TokenId: o.Logprob.Token, Logprob: o.Logprob.Logprob}}
	for _, t := range o.TopLogprobs {
		lp.Top = append(lp.Top, &tandemv1.Logprob{TokenId: t.Token, Logprob: t.Logprob})
	}
	return lp
}

// timing stamps a token against the request's arrival and the previous
// token.
type timing struct{ start, prev time.Time }

func (t *timing) next(now time.Time) *tandemv1.TokenTiming {
	tt := &tandemv1.TokenTiming{SinceStartUs: now.Sub(t.start).Microseconds(), SincePreviousUs: now.Sub(t.prev).Microseconds()}
	t.prev = now
	return tt
}

func checkHandle(kv *tandemv1.KVHandle, prompt, layers int) error {
	switch {
	case kv == nil:
		return status.Error(codes.InvalidArgument, "kv: required")
	case kv.GetNumTokens() != int32(prompt):
		return status.Errorf(codes.InvalidArgument, "kv.num_tokens %d: the prompt has %d tokens", kv.GetNumTokens(), prompt)
	case kv.GetNumLayers() != int32(layers):
		return status.Errorf(codes.InvalidArgument, "kv.num_layers %d: the model has %d layers", kv.GetNumLayers(), layers)
	case kv.GetSkipTokens() < 0 || kv.GetSkipTokens() >= kv.GetNumTokens():
		return status.Errorf(codes.InvalidArgument, "kv.skip_tokens %d: must be in [0, %d), the prompt's length", kv.GetSkipTokens(), kv.GetNumTokens())
	case kv.GetSourceTp() < 1:
		return status.Errorf(codes.InvalidArgument, "kv.source_tp %d: must be >= 1", kv.GetSourceTp())
	case kvtransfer.ElemSize(kv.GetDtype()) == 0:
		return status.Errorf(codes.InvalidArgument, "kv.dtype %v: DATA_TYPE_FLOAT32, DATA_TYPE_BFLOAT16 or DATA_TYPE_FLOAT16", kv.GetDtype())
	}
	return nil
}

func checkDestination(d *tandemv1.KVDestination) error {
	switch {
	case d == nil:
		return status.Error(codes.InvalidArgument, "destination: required")
	case d.GetTp() < 1:
		return status.Errorf(codes.InvalidArgument, "destination.tp %d: must be >= 1", d.GetTp())
	case len(d.GetRankAddresses()) != int(d.GetTp()):
		return status.Errorf(codes.InvalidArgument, "destination.rank_addresses: %d addresses for tp %d", len(d.GetRankAddresses()), d.GetTp())
	}
	for i, a := range d.GetRankAddresses() {
		if a == "" {
			return status.Error(codes.InvalidArgument, fmt.Sprintf("destination.rank_addresses[%d]: empty", i))
		}
	}
	return nil
}

// kvWireDType is a KV cache dtype as KV chunks and handles carry it.
func kvWireDType(d engine.KVCacheDType) tandemv1.DataType {
	switch d {
	case engine.KVBF16:
		return tandemv1.DataType_DATA_TYPE_BFLOAT16
	case engine.KVFP16:
		return tandemv1.DataType_DATA_TYPE_FLOAT16
	}
	return tandemv1.DataType_DATA_TYPE_FLOAT32
}
