package openai

import (
	"bufio"
	"bytes"
	"io"
)

// event is one server-sent event: its type ("" when the stream names
// none, which means "message") and its data lines joined by "\n".
type event struct {
	Type string
	Data []byte
}

// sseReader reads server-sent events as the HTML standard parses them:
// lines end in LF, CRLF or CR; "field: value" lines (one leading space
// of the value dropped) build an event that a blank line dispatches;
// lines starting with ":" are comments; fields other than event and data
// are ignored. An event without data is not dispatched.
type sseReader struct {
	sc  *bufio.Scanner
	ev  event
	has bool // a data field was seen for ev
}

// maxLine bounds one line of the stream (a chunk of a long completion
// with logprobs can run to megabytes).
const maxLine = 16 << 20

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	sc.Split(scanLines)
	return &sseReader{sc: sc}
}

// Next returns the next event; at the end of the stream it returns
// io.EOF, or the read error. An event cut off by the end of the stream
// (no blank line after it) is dispatched, as a lenient client does.
func (s *sseReader) Next() (event, error) {
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			if ev, ok := s.dispatch(); ok {
				return ev, nil
			}
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(field) {
		case "event":
			s.ev.Type = string(value)
		case "data":
			if s.has {
				s.ev.Data = append(s.ev.Data, '\n')
			}
			s.ev.Data = append(s.ev.Data, value...)
			s.has = true
		}
	}
	if err := s.sc.Err(); err != nil {
		return event{}, err
	}
	if ev, ok := s.dispatch(); ok {
		return ev, nil
	}
	return event{}, io.EOF
}

// dispatch ends the event being built; ok is false when it had no data.
func (s *sseReader) dispatch() (event, bool) {
	ev, ok := s.ev, s.has
	s.ev, s.has = event{}, false
	return ev, ok
}

// scanLines splits at LF, CRLF or a lone CR, as the event-stream format
// allows; a CR at the end of the buffer waits for more input to tell CR
// from CRLF.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		switch {
		case i+1 < len(data) && data[i+1] == '\n':
			return i + 2, data[:i], nil
		case i+1 < len(data) || atEOF:
			return i + 1, data[:i], nil
		}
		return 0, nil, nil // a CR last: wait for the next byte
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}
