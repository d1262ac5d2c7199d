package openai

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tandemllm/tandem/bench"
)

// FuzzSSE feeds arbitrary bytes to the event-stream reader and to the
// stream's measurement: neither panics nor hangs; the reader returns
// events whose data came from data lines, and a request counted as a
// success streamed output and reported no error.
func FuzzSSE(f *testing.F) {
	for _, s := range []string{
		tok("a") + tok("b") + done,
		"data: {\"error\":{\"message\":\"x\",\"code\":500}}\r\n\r\n",
		"event: error\rdata: boom\r\r",
		": ping\n\ndata: {\"choices\":[{\"text\":\"x\",\"finish_reason\":\"stop\"}]}\n",
		"data:{\"object\":\"error\",\"message\":\"m\"}\n\ndata: [DONE]",
		"data\n\ndata:\ndata\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := newSSEReader(bytes.NewReader(data))
		n := 0
		for {
			ev, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				break // a line over maxLine
			}
			n++
			if n > len(data) {
				t.Fatalf("%d events from %d bytes", n, len(data))
			}
			if !bytes.Contains(data, []byte("data")) || len(ev.Data) > len(data) {
				t.Fatalf("event %q from input %q", ev.Data, data)
			}
		}
		tg := &Target{}
		out := tg.read(bytes.NewReader(data), bench.Output{Start: time.Now()}, false)
		if out.Success && (out.Code != "" || out.Error != "" || out.OutputTokens < 0 || out.TTFT < 0 || out.Latency < out.TTFT) {
			t.Fatalf("a success with code %q, error %q, %d tokens, TTFT %v, E2E %v", out.Code, out.Error, out.OutputTokens, out.TTFT, out.Latency)
		}
		if !out.Success && (out.Code == "" || strings.TrimSpace(out.Error) == "") {
			t.Fatalf("a failure without a code or message: %+v", out)
		}
	})
}

// TestSSERoundTrip: events written with any of the three line endings
// read back as written.
func TestSSERoundTrip(t *testing.T) {
	events := []event{{Data: []byte("one")}, {Type: "error", Data: []byte("two\nlines")}, {Data: []byte("")}, {Data: []byte(" lead")}}
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		var b strings.Builder
		for _, ev := range events {
			if ev.Type != "" {
				b.WriteString("event: " + ev.Type + eol)
			}
			for _, line := range strings.Split(string(ev.Data), "\n") {
				b.WriteString("data: " + line + eol)
			}
			b.WriteString(": a comment" + eol + eol)
		}
		r := newSSEReader(strings.NewReader(b.String()))
		for i, want := range events {
			got, err := r.Next()
			if err != nil || got.Type != want.Type || string(got.Data) != string(want.Data) {
				t.Fatalf("eol %q, event %d: %q %q (%v); want %q %q", eol, i, got.Type, got.Data, err, want.Type, want.Data)
			}
		}
		if _, err := r.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("eol %q: after the events: %v, want EOF", eol, err)
		}
	}
}
