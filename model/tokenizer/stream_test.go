package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// peekFlush returns what Flush would return now, without disturbing d.
func peekFlush(d *StreamDecoder) string {
	c := *d
	c.ids = slices.Clone(d.ids)
	return c.Flush()
}

// TestStreamDecoder checks, for every prefix of the ids, that the text
// emitted so far plus what Flush would add equals Decode of the prefix, and
// that nothing emitted splits a character.
func TestStreamDecoder(t *testing.T) {
	n := 300
	if testing.Short() {
		n = 50
	}
	for _, name := range []string{"gpt2", "llama3", "qwen3", "sentencepiece", "metaspace"} {
		t.Run(name, func(t *testing.T) {
			tok := testTokenizer(t, name)
			r := rand.New(rand.NewPCG(11, uint64(len(name))))
			for i := range n {
				s := randomText(r, true)
				invalid := i%4 == 0
				if invalid {
					s = withInvalidUTF8(r, s)
				}
				skip := i%3 == 0
				ids := tok.Encode("<|endoftext|>"+s, i%2 == 0)
				d := tok.NewStreamDecoder(skip)
				var out strings.Builder
				for k, id := range ids {
					piece, err := d.Add(id)
					if err != nil {
						t.Fatal(err)
					}
					if !utf8.ValidString(piece) {
						t.Fatalf("%q: Add emitted invalid UTF-8 %q", s, piece)
					}
					if !invalid && strings.ContainsRune(piece, utf8.RuneError) && !strings.ContainsRune(s, utf8.RuneError) {
						t.Fatalf("%q: Add emitted U+FFFD in %q from valid text", s, piece)
					}
					out.WriteString(piece)
					want, err := tok.Decode(ids[:k+1], skip)
					if err != nil {
						t.Fatal(err)
					}
					if got := out.String() + peekFlush(d); got != want {
						t.Fatalf("%q prefix %d: stream %q, Decode %q", s, k+1, got, want)
					}
				}
			}
		})
	}
}

func TestStreamDecoderCharacterAtATime(t *testing.T) {
	tok := gpt2(t)
	// Each of these characters is split over several byte-level tokens.
	ids := tok.Encode("🎉👩‍💻", false)
	d := tok.NewStreamDecoder(false)
	var got []string
	for _, id := range ids {
		s, err := d.Add(id)
		if err != nil {
			t.Fatal(err)
		}
		if s != "" {
			got = append(got, s)
		}
	}
	if rest := d.Flush(); rest != "" {
		got = append(got, rest)
	}
	if strings.Join(got, "") != "🎉👩‍💻" {
		t.Fatalf("got %q", got)
	}
	for _, s := range got {
		if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
			t.Errorf("emitted %q", s)
		}
	}
	if len(ids) <= len(got) {
		t.Errorf("test is vacuous: %d ids, %d pieces", len(ids), len(got))
	}
}

func TestStreamDecoderBadID(t *testing.T) {
	d := gpt2(t).NewStreamDecoder(false)
	if _, err := d.Add(GPT2VocabSize); err == nil {
		t.Fatal("Add accepted an id past the vocabulary")
	}
	if _, err := d.Add(-1); err == nil {
		t.Fatal("Add accepted a negative id")
	}
}
