package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// runRemoteGenerate sends the prompt to a coordinator and prints what
// --local prints, plus the request id traces are filed under.
func runRemoteGenerate(cmd *cobra.Command, f *generateFlags, prompt string) error {
	if f.modelDir != "" || f.preset != "" || f.tp != 1 {
		return errors.New("--model, --preset and --tp apply to --local; a cluster chooses its model and groups (use --model-name to pick a model)")
	}
	params, err := f.params()
	if err != nil {
		return err
	}
	conn, err := f.client.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	sp := &tandemv1.SamplingParams{
		Temperature: params.Temperature, TopK: int32(params.TopK), TopP: params.TopP, Seed: params.Seed,
		MaxTokens: int32(params.MaxTokens), Stop: params.Stop, IgnoreEos: params.IgnoreEOS,
		Logprobs: params.Logprobs, TopLogprobs: int32(params.TopLogprobs),
	}
	req := &tandemv1.GenerateRequest{
		Model: f.modelName, Prompt: &tandemv1.GenerateRequest_Text{Text: prompt},
		Sampling: sp, AddSpecialTokens: &f.addSpecial,
	}
	start := time.Now()
	stream, err := tandemv1.NewGenerationClient(conn).Generate(ctx, req)
	if err != nil {
		return remoteError(f.client.addr, err)
	}
	out := cmd.OutOrStdout()
	res := &generateResult{Model: f.modelName}
	var first time.Time
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return remoteError(f.client.addr, err)
		}
		if msg.GetRequestId() != "" {
			res.RequestID = msg.GetRequestId()
		}
		if ids := msg.GetPromptTokenIds(); len(ids) > 0 {
			res.PromptTokenIDs = ids
			res.TokenizeMs = float64(msg.GetTokenizeUs()) / 1000
		}
		if len(msg.GetTokenIds()) > 0 && first.IsZero() {
			first = time.Now()
		}
		res.TokenIDs = append(res.TokenIDs, msg.GetTokenIds()...)
		res.Text += msg.GetText()
		for _, lp := range msg.GetLogprobs() {
			res.Logprobs = append(res.Logprobs, remoteLogprob(lp))
		}
		if fr := msg.GetFinishReason(); fr != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
			res.FinishReason = fr.Name()
			if fr == tandemv1.FinishReason_FINISH_REASON_ERROR {
				return fmt.Errorf("request %s failed: %s", res.RequestID, msg.GetErrorMessage())
			}
		}
		if !f.jsonOut {
			fmt.Fprint(out, msg.GetText())
		}
	}
	if first.IsZero() {
		first = time.Now()
	}
	res.finishTiming(start, first, time.Now())
	if f.jsonOut {
		return writeJSON(out, res)
	}
	fmt.Fprintln(out)
	res.writeSummary(cmd.ErrOrStderr())
	fmt.Fprintf(cmd.ErrOrStderr(), "request_id %s\n", res.RequestID)
	return nil
}

// remoteError says what the coordinator answered, with its status code.
func remoteError(addr string, err error) error {
	if s, ok := status.FromError(err); ok {
		return fmt.Errorf("coordinator %s: %s: %s", addr, s.Code(), s.Message())
	}
	return fmt.Errorf("coordinator %s: %w", addr, err)
}

func remoteLogprob(lp *tandemv1.TokenLogprobs) tokenLogprobJS {
	c := lp.GetChosen()
	j := tokenLogprobJS{Token: c.GetTokenId(), Text: c.GetText(), Logprob: c.GetLogprob()}
	for _, t := range lp.GetTop() {
		j.TopLogprobs = append(j.TopLogprobs, tokenLogprobJS{Token: t.GetTokenId(), Text: t.GetText(), Logprob: t.GetLogprob()})
	}
	return j
}
