package coordinator

import (
	"strings"

	"github.com/tandemllm/tandem/model/tokenizer"
)

// textStream turns one request's tokens into its text as they arrive and
// applies its stop strings, which workers leave to the coordinator. Text
// comes out in whole UTF-8 characters; a tail that could still grow into
// a stop string is held back until it cannot; text is cut before the
// first stop string. Special tokens have no text, as in OpenAI's API.
type textStream struct {
	dec     *tokenizer.StreamDecoder
	stops   []string
	text    strings.Builder // all the text decoded so far
	emitted int             // bytes of text released
	stopped bool            // a stop string was found: nothing more comes out
}

func newTextStream(tok *tokenizer.Tokenizer, stops []string) *textStream {
	return &textStream{dec: tok.NewStreamDecoder(true), stops: stops}
}

// add decodes the next token. It returns the text now released and
// whether a stop string has ended the text; the request then ends at
// this token.
func (s *textStream) add(id int32) (delta string, stopped bool) {
	if s.stopped {
		return "", true
	}
	piece, err := s.dec.Add(id)
	if err == nil {
		// Ids past the tokenizer's vocabulary (a model's padded embedding
		// table) have no text.
		s.text.WriteString(piece)
	}
	return s.take(false)
}

// finish releases the text held back, at the end of the request.
func (s *textStream) finish() (delta string, stopped bool) {
	if s.stopped {
		return "", true
	}
	s.text.WriteString(s.dec.Flush())
	return s.take(true)
}

// take returns the text not yet released, cut before the first stop
// string. Unless final, it holds back a tail that is a proper prefix of a
// stop string.
func (s *textStream) take(final bool) (delta string, stopped bool) {
	text := s.text.String()
	cut, hold := len(text), 0
	for _, stop := range s.stops {
		// A stop string can only end in the new text, but may start in
		// the tail held back before it.
		from := max(0, s.emitted-len(stop)+1)
		if i := strings.Index(text[from:], stop); i >= 0 && from+i < cut {
			cut, stopped = from+i, true
		}
		if !final {
			hold = max(hold, partialSuffix(text, stop))
		}
	}
	end := cut
	if !stopped {
		end = len(text) - hold
	}
	end = max(end, s.emitted)
	delta = text[s.emitted:end]
	s.emitted, s.stopped = end, stopped
	return delta, stopped
}

// partialSuffix is the length of the longest proper prefix of stop that
// text ends with.
func partialSuffix(text, stop string) int {
	for k := min(len(stop)-1, len(text)); k > 0; k-- {
		if strings.HasSuffix(text, stop[:k]) {
			return k
		}
	}
	return 0
}
