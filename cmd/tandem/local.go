package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/engine"
	"github.com/tandemllm/tandem/internal/cpuquota"
	"github.com/tandemllm/tandem/internal/scratch"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
	"github.com/tandemllm/tandem/netshape"
	"github.com/tandemllm/tandem/worker/supervisor"
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
	var link netshape.Profile
	if f.link != "" {
		if link, err = checkLink(f.link); err != nil {
			return err
		}
	}
	dir, err := resolveModelDir(ctx, f.modelDir, f.preset)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return err
	}
	g := groupFlags{tp: f.tp, group: fmt.Sprintf("local-%d", os.Getpid()), listen: "127.0.0.1:0", joinTimeout: time.Minute}
	if err := g.validate(false); err != nil {
		return err
	}
	if g.tp > 1 {
		cfg, err := model.LoadConfig(filepath.Join(dir, "config.json"))
		if err != nil {
			return err
		}
		if _, err := engine.ShardPlan(cfg, engine.Shard{TP: g.tp}); err != nil {
			return fmt.Errorf("--tp %d: %w", g.tp, err)
		}
		if f.backend.threads == 0 {
			// The ranks share the cores this process may use.
			f.backend.threads = max(1, cpuquota.CPUs()/g.tp)
		}
		stop, err := startLocalGroup(ctx, &g, dir, f, link, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer stop()
	}
	opts := f.engine.options()
	opts.Detokenizer = detokenizer{tok}
	m, comm, closeAll, err := openShard(ctx, dir, &g, &f.backend, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer closeAll()
	opts.Comm = comm
	e, err := engine.New(m, opts)
	if err != nil {
		return err
	}
	defer e.Shutdown(context.WithoutCancel(ctx))

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
				res.FinishReason = string(o.FinishReason)
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

// startLocalGroup runs the other ranks of a local TP group: an embedded
// etcd for their rendezvous, and one `tandem worker` process per rank
// under a supervisor that does not restart them (a rank's death fails the
// generation through the collectives) and whose ranks die with this
// process; with --link, each rank in a namespace of a network shaped to
// link (rank 0 by making its collective listener there). stop ends the
// workers (after rank 0's Shutdown they exit by themselves), the etcd
// server and the network.
func startLocalGroup(ctx context.Context, g *groupFlags, dir string, f *generateFlags, link netshape.Profile, w io.Writer) (stop func(), err error) {
	var nw *netshape.Network
	var etcdOpts cluster.EmbeddedOptions
	closeLink := func() {}
	if f.link != "" {
		if nw, err = startLink(ctx, link, g.tp, w); err != nil {
			return nil, err
		}
		closeLink = func() { nw.Close() }
		etcdOpts.ClientAddr = nw.HostAddr() + ":0"
		g.listen = nw.Node(0).Addr + ":0"
		g.listenIn = func(f func() error) error { return nw.Do(0, f) }
	}
	etcdDir, err := scratch.New(etcdScratch, scratch.Options{})
	if err != nil {
		closeLink()
		return nil, err
	}
	etcd, err := cluster.StartEmbedded(ctx, etcdDir.Path(), etcdOpts)
	if err != nil {
		etcdDir.Close()
		closeLink()
		return nil, err
	}
	g.etcdEndpoints = strings.Join(etcd.Endpoints(), ",")
	ranks := make([]int, 0, g.tp-1)
	for r := 1; r < g.tp; r++ {
		ranks = append(ranks, r)
	}
	// The generation reports a rank's death; only the supervisor's warnings
	// (a rank that would not stop) are worth showing here.
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opts := supervisor.Options{CrashLoopLimit: -1, StopTimeout: 5 * time.Second, Logger: quiet}
	group := supervisor.Group{
		Name: g.group, Ranks: ranks,
		Args: func(rank, _ int) []string {
			args := []string{"worker", "--role", string(cluster.RoleUnified), "--tp", strconv.Itoa(g.tp), "--rank", strconv.Itoa(rank),
				"--group", g.group, "--etcd-endpoints", g.etcdEndpoints, "--model", dir,
				"--threads", strconv.Itoa(f.backend.threads), "--kernels", f.backend.kernels}
			return append(args, f.engine.args()...)
		},
	}
	if nw != nil {
		err = inLink(nw, &opts, &group, 0) // rank r in node r; rank 0 is this process
	}
	var sup *supervisor.Supervisor
	if err == nil {
		sup, err = supervisor.Start(ctx, opts, group)
	}
	if err != nil {
		etcd.Close()
		etcdDir.Close()
		closeLink()
		return nil, err
	}
	return func() {
		sup.Stop()
		etcd.Close()
		etcdDir.Close()
		closeLink()
	}, nil
}
