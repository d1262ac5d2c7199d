package tokenizer

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// benchPrompt returns varied text of about n tokens under tok.
func benchPrompt(tb testing.TB, tok *Tokenizer, n int) string {
	r := rand.New(rand.NewPCG(5, 5))
	var b strings.Builder
	for len(tok.Encode(b.String(), false)) < n {
		for range 20 {
			b.WriteString(randomText(r, false))
		}
	}
	return b.String()
}

func BenchmarkEncode2k(b *testing.B) {
	for _, name := range []string{"gpt2", "llama3", "qwen3"} {
		b.Run(name, func(b *testing.B) {
			tok := testTokenizer(b, name)
			text := benchPrompt(b, tok, 2000)
			n := len(tok.Encode(text, false)) // warms the word cache
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				tok.Encode(text, false)
			}
			b.ReportMetric(float64(n), "tokens/op")
		})
	}
}

func BenchmarkDecode2k(b *testing.B) {
	tok := gpt2(b)
	ids := tok.Encode(benchPrompt(b, tok, 2000), false)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tok.Decode(ids, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStreamDecode(b *testing.B) {
	tok := realTokenizer(b, "llama3")
	ids := tok.Encode(benchPrompt(b, tok, 2000), false)
	b.ReportAllocs()
	for b.Loop() {
		d := tok.NewStreamDecoder(false)
		for _, id := range ids {
			if _, err := d.Add(id); err != nil {
				b.Fatal(err)
			}
		}
		d.Flush()
	}
	b.ReportMetric(float64(len(ids)), "tokens/op")
}
