package coordinator

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tandemllm/tandem/cluster"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/model/tokenizer"
)

// tinyDir writes the tiny preset (Llama, GPT-2's vocabulary, context
// 2048) into a fresh directory.
func tinyDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := preset.Write(context.Background(), "tiny", dir, preset.Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tinyModel loads the tiny preset as the coordinator does.
func tinyModel(t testing.TB) *modelInfo {
	t.Helper()
	m, err := loadModel(tinyDir(t), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// llama3Tokenizer is GPT-2's tokenizer with Llama-3's chat tokens as
// special added tokens (ids 50257..50260).
func llama3Tokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	data, err := tokenizer.GPT2JSON(tokenizer.GPT2VocabSize + 4)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"} {
		data = bytes.Replace(data, []byte("<|reserved_special_token_"+strconv.Itoa(i)+"|>"), []byte(name), 1)
	}
	tok, err := tokenizer.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// testEtcd starts a real embedded etcd for the test and returns a client
// of it; both are closed when the test ends.
func testEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	etcd, err := cluster.StartEmbedded(t.Context(), t.TempDir(), cluster.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { etcd.Close() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
