package tokenizer

import (
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/dlclark/regexp2/v2"
)

var scannerPatterns = []struct {
	name    string
	pattern string
}{
	{"gpt2", patternGPT2},
	{"llama3", patternLlama3},
	{"qwen2", patternQwen2},
}

// scanAll splits s with the hand-written scanner for pattern.
func scanAll(pat, s string) [][2]int {
	return (&pattern{scan: scannerFor(pat)}).findAll(nil, s)
}

// compileRegexp2 compiles with regexp2's interpreter. MustCompile would pick
// up the code-generated matchers that github.com/tiktoken-go/tokenizer
// registers for the GPT-2 and Llama-3 patterns, which skip U+007F.
func compileRegexp2(t testing.TB, pattern string) *regexp2.Regexp {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		t.Fatal(err)
	}
	return re
}

// regexpAll splits s with regexp2.
func regexpAll(t testing.TB, re *regexp2.Regexp, s string) [][2]int {
	idx, err := re.FindAllStringIndex(s, -1)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int
	for _, m := range idx {
		out = append(out, [2]int{m[0], m[1]})
	}
	return out
}

func pieces(s string, ms [][2]int) []string {
	var out []string
	for _, m := range ms {
		out = append(out, s[m[0]:m[1]])
	}
	return out
}

func TestScannersMatchRegexp2(t *testing.T) {
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for _, p := range scannerPatterns {
		t.Run(p.name, func(t *testing.T) {
			re := compileRegexp2(t, p.pattern)
			r := rand.New(rand.NewPCG(1, uint64(len(p.name))))
			for i := range n {
				s := randomText(r, true)
				if i%4 == 0 {
					s = withInvalidUTF8(r, s)
				}
				got, want := scanAll(p.pattern, s), regexpAll(t, re, s)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%q:\nscanner %q\nregexp2 %q", s, pieces(s, got), pieces(s, want))
				}
			}
		})
	}
}

func TestScannerSplits(t *testing.T) {
	tests := []struct {
		pattern, in string
		want        []string
	}{
		{patternGPT2, "Hello world", []string{"Hello", " world"}},
		{patternGPT2, "a  b", []string{"a", " ", " b"}},
		{patternGPT2, "x   ", []string{"x", "   "}},
		{patternGPT2, "I'm OK'S", []string{"I", "'m", " OK", "'", "S"}},
		{patternGPT2, "12345 6", []string{"12345", " 6"}},
		{patternLlama3, "12345", []string{"123", "45"}},
		{patternLlama3, "I'M (ok)", []string{"I", "'M", " (", "ok", ")"}},
		{patternLlama3, "a \n\n b", []string{"a", " \n\n", " b"}},
		{patternLlama3, "x;\n\ny", []string{"x", ";\n\n", "y"}},
		{patternQwen2, "12345", []string{"1", "2", "3", "4", "5"}},
		{patternQwen2, "\thello", []string{"\thello"}},
	}
	for _, tt := range tests {
		got := pieces(tt.in, scanAll(tt.pattern, tt.in))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzScanners(f *testing.F) {
	for _, s := range []string{"Hello world", "I'M  \n\n 12345", "\xff\xfe 'll", "🎉 ſ K\u0085\u00a0"} {
		f.Add(s)
	}
	res := make([]*regexp2.Regexp, len(scannerPatterns))
	for i, p := range scannerPatterns {
		res[i] = compileRegexp2(f, p.pattern)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for i, p := range scannerPatterns {
			got, want := scanAll(p.pattern, s), regexpAll(t, res[i], s)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s %q:\nscanner %q\nregexp2 %q", p.name, s, pieces(s, got), pieces(s, want))
			}
		}
	})
}
