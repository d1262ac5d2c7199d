package tokenizer

import (
	"compress/gzip"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// Parsing the real files takes a second each, so tests share one copy of
// each; the tokenizers are immutable, so sharing them is safe.
var (
	loadOnce  sync.Map // name -> func() (*Tokenizer, error)
	gpt2Once  = sync.OnceValues(func() (*Tokenizer, error) { return GPT2Tokenizer(0) })
	realFiles = []string{"llama3", "qwen3"}
)

// realTokenizer returns the tokenizer in testdata/NAME-tokenizer.json.gz.
func realTokenizer(t testing.TB, name string) *Tokenizer {
	t.Helper()
	f, _ := loadOnce.LoadOrStore(name, sync.OnceValues(func() (*Tokenizer, error) {
		data, err := gunzipFile(filepath.Join("testdata", name+"-tokenizer.json.gz"))
		if err != nil {
			return nil, err
		}
		return Parse(data)
	}))
	tok, err := f.(func() (*Tokenizer, error))()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func gpt2(t testing.TB) *Tokenizer {
	t.Helper()
	tok, err := gpt2Once()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func gunzipFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// Fragments the random corpus is built from: every class of character the
// pre-tokenizer patterns distinguish, and the cases that trip them.
var corpusFragments = [][]string{
	{"the", "The", "THE", "quick", "brown", "fox", "jumps", "lazy", "dog", "tokenizer", "hello", "naïve", "Straße", "über", "İstanbul", "ſtraße", "Kelvin", "东京", "データ", "모델", "слово", "λόγος", "كلمة", "מילה", "नमस्ते", "ภาษา"},
	{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'Ve", "'lL", "'D", "’s", "'", "''", "'x", "'ſ", "'K"},
	{" ", "  ", "   ", "\t", "\n", "\n\n", "\r", "\r\n", " \n ", "\u00a0", "\u3000", "\u2028", "\u2029", "\f", "\v", "\u0085", "\u1680", "\u200b", "\ufeff"},
	{"0", "7", "42", "123", "1234", "12345678", "3.14", "1,000", "٣", "४२", "１２", "²", "Ⅷ", "½", "𝟘"},
	{"{", "}", "()", "[]", "=>", "->", "::", "==", "+=", "&&", "/*", "//", "#include", "<div>", "\"str\"", "`x`", "$var", "@dec", "\\n", "\x00", "\x1b", "\x7f"},
	{"🎉", "😀", "👩‍💻", "🇯🇵", "👍🏽", "✨", "❤️", "e\u0301", "\u0301"},
	{".", ",", "!", "?", "...", "—", "«", "»", "“", "”", "-", "_", "%", "&", "https://example.com/a?b=1&c=2#d", "user@example.org"},
}

// randomText returns a string of random fragments, spaces and, with
// wild, random code points from the whole Unicode range.
func randomText(r *rand.Rand, wild bool) string {
	var b strings.Builder
	n := 1 + r.IntN(16)
	for range n {
		switch k := r.IntN(10); {
		case k == 0:
			b.WriteString(strings.Repeat(string(rune('a'+r.IntN(26))), 1+r.IntN(300)))
		case k == 1 && wild:
			for range 1 + r.IntN(4) {
				c := rune(r.IntN(0x30000))
				if utf8.ValidRune(c) {
					b.WriteRune(c)
				}
			}
		default:
			frags := corpusFragments[r.IntN(len(corpusFragments))]
			b.WriteString(frags[r.IntN(len(frags))])
		}
		if r.IntN(2) == 0 {
			b.WriteByte(' ')
		}
	}
	return b.String()
}

// withInvalidUTF8 corrupts s with stray bytes that are not valid UTF-8.
func withInvalidUTF8(r *rand.Rand, s string) string {
	bad := []string{"\xff", "\xc3", "\xe2\x82", "\xf0\x9f\x8e", "\x80", "\xed\xa0\x80"}
	i := r.IntN(len(s) + 1)
	return s[:i] + bad[r.IntN(len(bad))] + s[i:]
}

func equalIDs(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// fixtureFiles maps the names of small hand-made tokenizers to their files.
var fixtureFiles = map[string]string{
	"sentencepiece": "sentencepiece-bytefallback.json", // Llama-2 style
	"metaspace":     "metaspace.json",                  // Metaspace pre-tokenizer and decoder
}

// testTokenizer returns gpt2, a real file's tokenizer or a fixture by name.
func testTokenizer(t testing.TB, name string) *Tokenizer {
	t.Helper()
	if name == "gpt2" {
		return gpt2(t)
	}
	if file, ok := fixtureFiles[name]; ok {
		tok, err := Load(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	return realTokenizer(t, name)
}
