package kvtransfer

import (
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/tandemllm/tandem/internal/syncbuf"
	"github.com/tandemllm/tandem/pki"
	"github.com/tandemllm/tandem/pki/pkitest"
	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// identity is a process's TLS configurations, from certificate name of a
// CA made in dir.
type identity struct{ server, client *tls.Config }

func newIdentity(t testing.TB, dir, name string) identity {
	t.Helper()
	server, client := pkitest.Configs(t, dir, name)
	return identity{server, client}
}

func newCA(t testing.TB) string { return pkitest.NewCA(t, "decode", "prefill") }

// tlsReceiver serves the tiny receiver behind mutual TLS, logging to logs.
func tlsReceiver(t *testing.T, id identity, logs io.Writer) (*Receiver, string) {
	log := slog.New(slog.NewTextHandler(logs, nil))
	return serveMux(t, ReceiverOptions{Rank: 0, Heads: tiny.heads, HeadDim: tiny.hd, Layers: tiny.layers, MaxTokens: 64, Logger: log},
		MuxOptions{TLS: id.server, Logger: log}, grpc.Creds(pki.Terminated()))
}

// KV moves over mutual TLS on both transports, bit for bit.
func TestTLSPush(t *testing.T) {
	dir := newCA(t)
	var logs syncbuf.Buffer
	r, addr := tlsReceiver(t, newIdentity(t, dir, "decode"), &logs)
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			opts := tr.opts
			opts.TLS = newIdentity(t, dir, "prefill").client
			s := newSender(t, opts)
			id := "tls-" + tr.name
			if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec(id, 1, addr)); err != nil {
				t.Fatal(err)
			}
			got, err := r.Await(ctx, tinyExpect(id, 1))
			if err != nil {
				t.Fatal(err)
			}
			checkKV(t, got, tiny.layers, tiny.tokens, tiny.heads, tiny.hd)
		})
	}
	if logs.String() != "" {
		t.Fatalf("a receiver served members only and logged:\n%s", logs.String())
	}
}

// A KV connection without a certificate, or with one another CA signed, is
// refused at the TLS handshake, on both transports, and logged; the
// receiver goes on taking KV from its own cluster.
func TestTLSRefusesStrangers(t *testing.T) {
	dir, other := newCA(t), newCA(t)
	var logs syncbuf.Buffer
	r, addr := tlsReceiver(t, newIdentity(t, dir, "decode"), &logs)
	stranger := newIdentity(t, other, "prefill")
	// The stranger does not check the receiver: only the receiver decides.
	stranger.client.VerifyPeerCertificate = nil
	for _, tc := range []struct {
		name string
		opts SenderOptions
	}{
		{"raw, plain TCP", SenderOptions{MaxAttempts: 1}},
		{"grpc, plain TCP", SenderOptions{MaxAttempts: 1, DisableRaw: true}},
		{"raw, another CA", SenderOptions{MaxAttempts: 1, TLS: stranger.client}},
		{"grpc, another CA", SenderOptions{MaxAttempts: 1, DisableRaw: true, TLS: stranger.client}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			before := strings.Count(logs.String(), "refused a connection at its TLS handshake")
			s := newSender(t, tc.opts)
			if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("stranger", 1, addr)); err == nil {
				t.Fatal("a push from outside the cluster succeeded")
			}
			// The sender may see the refusal before the receiver logs it.
			if text, err := logs.Await(ctx, func(s string) bool {
				return strings.Count(s, "refused a connection at its TLS handshake") > before
			}); err != nil {
				t.Fatalf("the refusal was not logged: %v\n%s", err, text)
			}
			if n := r.Pending(); n != 0 {
				t.Fatalf("%d requests buffered from a stranger", n)
			}
		})
	}
	ctx := testCtx(t, 10*time.Second)
	s := newSender(t, SenderOptions{TLS: newIdentity(t, dir, "prefill").client})
	if _, err := s.Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("member", 1, addr)); err != nil {
		t.Fatalf("a member's push after the strangers': %v", err)
	}
	if _, err := r.Await(ctx, tinyExpect("member", 1)); err != nil {
		t.Fatal(err)
	}
}

// A frame whose payload length says 4 GiB makes the receiver hang up and
// log why, without allocating anything near that, and other connections
// go on.
func TestRawFrameOf4GiB(t *testing.T) {
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	r, addr := serve(t, ReceiverOptions{Rank: 0, Heads: tiny.heads, HeadDim: tiny.hd, Layers: tiny.layers, MaxTokens: 64, Logger: log})
	for _, tc := range []struct {
		name   string
		hl, n  uint32
		header []byte
		want   string
	}{
		{"payload of 4 GiB", 8, 1<<32 - 1, nil, "payload 4294967295 bytes"},
		{"header of 4 GiB", 1<<32 - 1, 16, nil, "header 4294967295 bytes"},
		// A header within bounds whose chunk is small but whose payload
		// length is the largest accepted: refused against the chunk's
		// shape before the payload is read.
		{"payload unlike its chunk", 0, maxMessageBytes, frameHeader(t, rawChunk("x", 0, 1, 0, 0, 4)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, rawHello); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, make([]byte, len(rawReply))); err != nil {
				t.Fatal(err)
			}
			hl := tc.hl
			if tc.header != nil {
				hl = uint32(len(tc.header))
			}
			frame := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, hl), tc.n)
			frame = append(frame, tc.header...)
			var rest []byte // what follows the header, made before counting
			if tc.want == "" {
				rest = make([]byte, int(tc.n)+rawPrefixBytes) // the payload, then the end of the stream
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			if _, err := c.Write(frame); err != nil {
				t.Fatal(err)
			}
			if tc.want != "" {
				waitEOF(t, c)
				if !strings.Contains(logs.String(), tc.want) {
					t.Fatalf("the hang-up was not logged with %q:\n%s", tc.want, logs.String())
				}
			} else {
				// The receiver discards the payload as it comes; the ack
				// of the stream says why the chunk failed.
				if _, err := c.Write(rest); err != nil {
					t.Fatal(err)
				}
				var ack tandemv1.KVAck
				readAck(t, c, &ack)
				if ack.Complete || !strings.Contains(ack.ErrorMessage, "payload") {
					t.Fatalf("ack %v, want the chunk failed for its payload's size", &ack)
				}
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 2<<20 {
				t.Fatalf("%d bytes allocated for a frame claiming %d", grew, tc.n)
			}
		})
	}
	// The receiver still takes KV.
	ctx := testCtx(t, 10*time.Second)
	if _, err := newSender(t, SenderOptions{}).Push(ctx, &synth{tokens: tiny.tokens, hd: tiny.hd}, tinySpec("after", 1, addr)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Await(ctx, tinyExpect("after", 1)); err != nil {
		t.Fatal(err)
	}
}

// frameHeader is m without its payload, as a raw frame's header.
func frameHeader(t *testing.T, m *tandemv1.KVChunk) []byte {
	t.Helper()
	m = proto.CloneOf(m)
	m.Payload = nil
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAck reads a raw stream's ack from c.
func readAck(t *testing.T, c net.Conn, ack *tandemv1.KVAck) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, binary.LittleEndian.Uint32(n[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(b, ack); err != nil {
		t.Fatal(err)
	}
}
