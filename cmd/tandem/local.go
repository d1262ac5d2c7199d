package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
)

// resolveModelDir returns the model directory of --model or --preset.
func resolveModelDir(ctx context.Context, modelDir, presetName string) (string, error) {
	switch {
	case modelDir != "" && presetName != "":
		return "", errors.New("--model and --preset are exclusive")
	case modelDir != "":
		return modelDir, nil
	case presetName != "":
		return preset.Ensure(ctx, presetName, preset.DefaultCacheDir(), preset.Options{})
	}
	return "", errors.New("--model DIR or --preset NAME is required")
}

// detokenizer adapts the tokenizer's incremental decoder to the engine;
// special tokens are left out of the text, as OpenAI's API does.
type detokenizer struct{ tok *tokenizer.Tokenizer }

func (d detokenizer) NewStream() engine.TextStream {
	return textStream{d.tok.NewStreamDecoder(true)}
}

// textStream drops ids the tokenizer does not know (a model vocabulary
// padded past the tokenizer's) instead of failing the request.
type textStream struct{ d *tokenizer.StreamDecoder }

func (s textStream) Add(id int32) string {
	text, err := s.d.Add(id)
	if err != nil {
		return ""
	}
	return text
}

func (s textStream) Flush() string { return s.d.Flush() }

func runLocalGenerate(cmd *cobra.Command, f *generateFlags, prompt string) error {
	ctx := cmd.Context()
	params, err := f.params()
	if err != nil {
		return err
	}
	dir, err := resolveModelDir(ctx, f.modelDir, f.preset)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	be, err := f.backend.open()
	if err != nil {
		return err
	}
	defer be.Close()
	m, err := engine.Open(dir, be, engine.Shard{})
	if err != nil {
		return err
	}
	defer m.Close()
	e, err := engine.New(m, engine.Options{Detokenizer: detokenizer{tok}})
	if err != nil {
		return err
	}

	res := &generateResult{Model: dir}
	tokStart := time.Now()
	res.PromptTokenIDs = tok.Encode(prompt, f.addSpecial)
	start := time.Now()
	res.TokenizeMs = ms(start.Sub(tokStart))
	if err := e.Add(engine.Request{ID: "local", Prompt: res.PromptTokenIDs, Params: params}); err != nil {
		return flagError(err)
	}
	out := cmd.OutOrStdout()
	var first time.Time
	for e.HasWork() {
		outs, err := e.Step(ctx)
		if err != nil {
			return err
		}
		for _, o := range outs {
			if first.IsZero() {
				first = time.Now()
			}
			res.TokenIDs = append(res.TokenIDs, o.Token)
			res.Text += o.Text
			if o.Logprob != nil {
				res.Logprobs = append(res.Logprobs, logprobJSON(tok, *o.Logprob, o.TopLogprobs))
			}
			if o.FinishReason != "" {
				res.FinishReason = o.FinishReason
			}
			if !f.jsonOut {
				fmt.Fprint(out, o.Text)
			}
		}
	}
	res.finishTiming(start, first, time.Now())
	if f.jsonOut {
		return writeJSON(out, res)
	}
	fmt.Fprintln(out)
	res.writeSummary(cmd.ErrOrStderr())
	return nil
}

func logprobJSON(tok *tokenizer.Tokenizer, lp engine.TokenLogprob, top []engine.TokenLogprob) tokenLogprobJS {
	text := func(id int32) string {
		s, err := tok.Decode([]int32{id}, false)
		if err != nil {
			return ""
		}
		return s
	}
	j := tokenLogprobJS{Token: lp.Token, Text: text(lp.Token), Logprob: lp.Logprob}
	for _, t := range top {
		j.TopLogprobs = append(j.TopLogprobs, tokenLogprobJS{Token: t.Token, Text: text(t.Token), Logprob: t.Logprob})
	}
	return j
}
