package coordinator

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// runText feeds ids one at a time, as workers stream them, and returns
// the text released, the index of the token a stop string ended at (-1
// for none), and the deltas.
func runText(t *testing.T, m *modelInfo, ids []int32, stops []string) (text string, stoppedAt int, deltas []string) {
	t.Helper()
	s := newTextStream(m.tok, stops)
	stoppedAt = -1
	for i, id := range ids {
		d, stopped := s.add(id)
		deltas = append(deltas, d)
		if stopped {
			stoppedAt = i
			break
		}
	}
	d, stopped := s.finish()
	if stoppedAt >= 0 && (d != "" || !stopped) {
		t.Errorf("finish after a stop released %q, stopped %v", d, stopped)
	}
	deltas = append(deltas, d)
	for _, d := range deltas {
		if !utf8.ValidString(d) {
			t.Errorf("delta %q is not whole UTF-8", d)
		}
	}
	return strings.Join(deltas, ""), stoppedAt, deltas
}

func TestTextStreamStopStrings(t *testing.T) {
	m := tinyModel(t)
	const text = "Hello world, this is a test of stop strings. 日本語 café ☃ done"
	ids := m.tok.Encode(text, false)
	if len(ids) < 10 {
		t.Fatalf("only %d tokens", len(ids))
	}
	// Expected: the text before the first occurrence of any stop, ending
	// at the first token whose text completes one.
	expect := func(stops []string) (string, int) {
		for k := range ids {
			prefix, err := m.tok.Decode(ids[:k+1], true)
			if err != nil {
				t.Fatal(err)
			}
			cut := -1
			for _, s := range stops {
				if i := strings.Index(prefix, s); i >= 0 && (cut < 0 || i < cut) {
					cut = i
				}
			}
			if cut >= 0 {
				return prefix[:cut], k
			}
		}
		return text, -1
	}
	tests := []struct {
		name  string
		stops []string
	}{
		{"no stops", nil},
		{"stop never seen", []string{"xyz"}},
		{"across tokens", []string{"is a"}},
		{"across tokens with spaces", []string{"o w"}},
		{"inside one token", []string{"ell"}},
		{"at the start", []string{"Hel"}},
		{"first of several wins", []string{"stop", "test", "world"}},
		{"earliest position wins over list order", []string{"strings", "this"}},
		{"multi-byte stop", []string{"本語"}},
		{"stop after multi-byte text", []string{"é ☃"}},
		{"prefix of a stop at the end is released at finish", []string{"done!"}},
		{"last token", []string{"done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantAt := expect(tt.stops)
			got, at, _ := runText(t, m, ids, tt.stops)
			if got != want || at != wantAt {
				t.Errorf("text %q stopped at token %d, want %q at %d", got, at, want, wantAt)
			}
		})
	}
}

func TestTextStreamHoldsBackPossibleStops(t *testing.T) {
	m := tinyModel(t)
	ids := m.tok.Encode("one two three", false)
	s := newTextStream(m.tok, []string{"two three four"})
	var released string
	for _, id := range ids {
		d, stopped := s.add(id)
		if stopped {
			t.Fatal("stopped without a stop string")
		}
		released += d
	}
	if released != "one " {
		t.Errorf("released %q before the end, want %q (the rest could become the stop string)", released, "one ")
	}
	if d, _ := s.finish(); released+d != "one two three" {
		t.Errorf("after finish %q", released+d)
	}
}

func TestTextStreamNeverSplitsCharacters(t *testing.T) {
	m := tinyModel(t)
	const text = "日本語の文章 🙂 naïve"
	ids := m.tok.Encode(text, false)
	got, _, deltas := runText(t, m, ids, nil)
	if got != text {
		t.Errorf("text %q, want %q", got, text)
	}
	empty := 0
	for _, d := range deltas {
		if d == "" {
			empty++
		}
	}
	if empty == 0 {
		t.Error("no token was held back; the test text should split characters across tokens")
	}
}

func TestTextStreamSkipsSpecialAndUnknownIDs(t *testing.T) {
	m := tinyModel(t)
	eos, ok := m.tok.EOS()
	if !ok {
		t.Fatal("no EOS")
	}
	ids := append(m.tok.Encode("hi", false), eos, 60000)
	if got, _, _ := runText(t, m, ids, nil); got != "hi" {
		t.Errorf("text %q, want %q", got, "hi")
	}
}

func TestTokenText(t *testing.T) {
	m := tinyModel(t)
	ids := m.tok.Encode("café ☃", false)
	var all []byte
	for _, id := range ids {
		text, b := m.tokenText(id)
		all = append(all, b...)
		if utf8.Valid(b) && text != string(b) || !utf8.Valid(b) && !strings.ContainsRune(text, utf8.RuneError) {
			t.Errorf("token %d: text %q, bytes %q", id, text, b)
		}
	}
	if string(all) != "café ☃" {
		t.Errorf("bytes of all tokens %q, want %q", all, "café ☃")
	}
	eos, _ := m.tok.EOS()
	if text, b := m.tokenText(eos); text != "<|endoftext|>" || string(b) != text {
		t.Errorf("EOS: %q %q", text, b)
	}
}
