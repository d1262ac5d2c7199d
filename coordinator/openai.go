package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// maxBodyBytes bounds an OpenAI request body.
const maxBodyBytes = 8 << 20

// HTTPHandler serves the OpenAI-compatible API (/v1/completions,
// /v1/chat/completions, /v1/models) and the probes: /readyz answers 200
// only when the cluster can serve the model, /healthz (and /livez)
// whenever this process serves HTTP. A request whose client disconnects
// is cancelled on the workers, as a cancelled gRPC call is.
func (c *Coordinator) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/completions", c.serveCompletions)
	mux.HandleFunc("/v1/chat/completions", c.serveChat)
	mux.HandleFunc("/v1/models", c.serveModels)
	mux.HandleFunc("/readyz", c.serveHealth)
	live := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "alive"})
	}
	mux.HandleFunc("/healthz", live)
	mux.HandleFunc("/livez", live)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, typ: "invalid_request_error",
			message: fmt.Sprintf("unknown route %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

func (c *Coordinator) serveCompletions(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	req, aerr := parseCompletionRequest(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	c.serveOpenAI(w, r, req)
}

func (c *Coordinator) serveChat(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	req, aerr := parseChatRequest(body)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	t := c.model.chat
	req.gen.Prompt = &tandemv1.GenerateRequest_Text{Text: t.render(req.messages)}
	add := t.addSpecialTokens()
	req.gen.AddSpecialTokens = &add
	req.gen.Sampling.StopTokenIds = append(req.gen.Sampling.StopTokenIds, t.stopTokens()...)
	c.serveOpenAI(w, r, req)
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error",
			message: fmt.Sprintf("%s %s: use POST", r.Method, r.URL.Path)}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error",
			message: fmt.Sprintf("the request body exceeds %d bytes", tooBig.Limit)}
	case err != nil:
		return nil, invalid("", "reading the request body: %v", err)
	}
	return body, nil
}

// requestIDHeader carries a client's request id, as vLLM takes it: the
// request is filed, traced and logged under it (checked as a gRPC
// request_id is; one in flight already gets 409), and every response
// echoes it; without one, a response echoes the id the coordinator
// made once it has made it.
const requestIDHeader = "X-Request-Id"

// serveOpenAI runs req through the same path as a gRPC Generate call,
// with the HTTP request's context, and answers in OpenAI's format.
func (c *Coordinator) serveOpenAI(w http.ResponseWriter, r *http.Request, req *openAIRequest) {
	if id := r.Header.Get(requestIDHeader); id != "" {
		req.gen.RequestId = id
		if checkRequestID(id) == nil {
			w.Header().Set(requestIDHeader, id) // errors too, as vLLM does
		}
	}
	rs := &responder{req: req, model: c.model.name, created: time.Now().Unix(), header: w.Header()}
	if !req.stream {
		var text strings.Builder
		var lps []*tandemv1.TokenLogprobs
		var last *tandemv1.GenerateResponse
		err := c.generate(r.Context(), req.gen, req.fillMaxTokens, func(m *tandemv1.GenerateResponse) error {
			rs.noteID(m)
			text.WriteString(m.Text)
			lps = append(lps, m.Logprobs...)
			if m.FinishReason != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED {
				last = m
			}
			return nil
		})
		switch {
		case err != nil:
			writeError(w, req.apiError(err))
		case last == nil:
			writeError(w, &apiError{status: http.StatusInternalServerError, typ: "server_error", message: "the request ended without a final message"})
		case last.FinishReason == tandemv1.FinishReason_FINISH_REASON_ERROR:
			writeError(w, &apiError{status: http.StatusInternalServerError, typ: "server_error", message: last.ErrorMessage})
		default:
			writeJSON(w, http.StatusOK, rs.full(text.String(), lps, last))
		}
		return
	}

	sse := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: c.opts.WriteTimeout, log: c.log}
	started := false
	err := c.generate(r.Context(), req.gen, req.fillMaxTokens, func(m *tandemv1.GenerateResponse) error {
		rs.noteID(m)
		final := m.FinishReason != tandemv1.FinishReason_FINISH_REASON_UNSPECIFIED
		if m.Text == "" && len(m.Logprobs) == 0 && !final {
			return nil
		}
		if !started {
			// Headers go out with the first output, so that failures
			// before it still get a proper HTTP status.
			started = true
			sse.start()
			if req.chat {
				if err := sse.event(rs.roleChunk()); err != nil {
					return err
				}
			}
		}
		if final && m.FinishReason == tandemv1.FinishReason_FINISH_REASON_ERROR {
			if m.Text != "" || len(m.Logprobs) > 0 {
				if err := sse.event(rs.chunk(m.Text, m.Logprobs, nil)); err != nil {
					return err
				}
			}
			return sse.event(errorBody(&apiError{typ: "server_error", message: m.ErrorMessage}))
		}
		if err := sse.event(rs.chunk(m.Text, m.Logprobs, m)); err != nil {
			return err
		}
		if final && req.includeUsage {
			return sse.event(rs.usageChunk(m.Usage))
		}
		return nil
	})
	switch {
	case err != nil && !started:
		writeError(w, req.apiError(err))
		return
	case err != nil:
		sse.event(errorBody(req.apiError(err)))
	}
	sse.done()
}

func (c *Coordinator) serveModels(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error",
			message: fmt.Sprintf("%s %s: use GET", r.Method, r.URL.Path)})
		return
	}
	type modelJSON struct {
		ID          string `json:"id"`
		Object      string `json:"object"`
		Created     int64  `json:"created"`
		OwnedBy     string `json:"owned_by"`
		MaxModelLen int32  `json:"max_model_len"`
	}
	list := struct {
		Object string      `json:"object"`
		Data   []modelJSON `json:"data"`
	}{Object: "list", Data: []modelJSON{}}
	for _, m := range c.listModels().Models {
		list.Data = append(list.Data, modelJSON{m.Id, "model", m.Created.GetSeconds(), m.OwnedBy, m.ContextLength})
	}
	writeJSON(w, http.StatusOK, list)
}

// serveHealth answers 200 when the cluster serves the model, 503
// otherwise, with the groups of each role.
func (c *Coordinator) serveHealth(w http.ResponseWriter, _ *http.Request) {
	h := c.health()
	type roleJSON struct {
		Role  string `json:"role"`
		Ready int32  `json:"ready"`
		Total int32  `json:"total"`
	}
	body := struct {
		Status  string     `json:"status"`
		Message string     `json:"message,omitempty"`
		Groups  []roleJSON `json:"groups"`
	}{Status: "serving", Message: h.Message, Groups: []roleJSON{}}
	for _, g := range h.Groups {
		body.Groups = append(body.Groups, roleJSON{g.Role.Name(), g.Ready, g.Total})
	}
	code := http.StatusOK
	if h.Status != tandemv1.ServingStatus_SERVING_STATUS_SERVING {
		body.Status, code = "not_serving", http.StatusServiceUnavailable
	}
	writeJSON(w, code, body)
}

// apiError turns an error of generate into an OpenAI error, naming the
// request's parameters rather than GenerateRequest's fields.
func (req *openAIRequest) apiError(err error) *apiError {
	var fe *fieldError
	if errors.As(err, &fe) {
		param, shown := req.param(fe.field)
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, message: shown + ": " + fe.msg}
	}
	st := status.Convert(err)
	e := &apiError{message: st.Message(), typ: "server_error"}
	switch st.Code() {
	case codes.InvalidArgument:
		e.status, e.typ = http.StatusBadRequest, "invalid_request_error"
	case codes.NotFound:
		e.status, e.typ = http.StatusNotFound, "invalid_request_error"
	case codes.AlreadyExists: // only a request id in use
		e.status, e.typ, e.param = http.StatusConflict, "invalid_request_error", requestIDHeader
		e.message = requestIDHeader + ": " + strings.TrimPrefix(e.message, "request_id: ")
	case codes.ResourceExhausted:
		e.status, e.typ = http.StatusTooManyRequests, "rate_limit_error"
	case codes.Unavailable:
		e.status = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		e.status = http.StatusGatewayTimeout
	case codes.Canceled:
		// The client has gone; nobody reads this.
		e.status = 499
	default:
		e.status = http.StatusInternalServerError
	}
	return e
}

// param maps a GenerateRequest field path (such as "sampling.stop[1]")
// to the OpenAI parameter it came from and the path to show ("stop[1]").
func (req *openAIRequest) param(field string) (param, shown string) {
	field = strings.TrimPrefix(field, "sampling.")
	name := field
	if i := strings.IndexAny(field, ".["); i >= 0 {
		name = field[:i]
	}
	rest := strings.TrimPrefix(field[len(name):], ".ids")
	switch name {
	case "text", "token_ids", "prompt":
		param = "prompt"
		if req.chat {
			param, rest = "messages", ""
		}
	case "top_logprobs":
		param = "logprobs"
		if req.chat {
			param = "top_logprobs"
		}
	case "max_tokens":
		param = req.maxTokensParam
	case "request_id":
		param = requestIDHeader
	default:
		param = name
	}
	return param, param + rest
}

// responder builds one request's OpenAI response objects.
type responder struct {
	req        *openAIRequest
	model      string
	created    int64
	id         string
	header     http.Header // the response's, for the request id
	textOffset int         // completions' logprobs.text_offset so far
	partial    []byte      // bytes of a character split across tokens, not yet counted
}

func (rs *responder) noteID(m *tandemv1.GenerateResponse) {
	if m.RequestId == "" || rs.id != "" {
		return
	}
	rs.header.Set(requestIDHeader, m.RequestId)
	if rs.req.chat {
		rs.id = "chatcmpl-" + m.RequestId
	} else {
		rs.id = "cmpl-" + m.RequestId
	}
}

// responseJSON is every response and chunk of both endpoints.
type responseJSON struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []choiceJSON    `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type choiceJSON struct {
	Index        int          `json:"index"`
	Text         *string      `json:"text,omitempty"`    // completions
	Message      *chatMessage `json:"message,omitempty"` // chat
	Delta        *chatDelta   `json:"delta,omitempty"`   // chat chunks
	Logprobs     any          `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type chatDelta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type usageJSON struct {
	PromptTokens     int32 `json:"prompt_tokens"`
	CompletionTokens int32 `json:"completion_tokens"`
	TotalTokens      int32 `json:"total_tokens"`
}

func usageOf(u *tandemv1.Usage) json.RawMessage {
	b, _ := json.Marshal(usageJSON{u.GetPromptTokens(), u.GetCompletionTokens(), u.GetPromptTokens() + u.GetCompletionTokens()})
	return b
}

func (rs *responder) object(chunk bool) string {
	switch {
	case rs.req.chat && chunk:
		return "chat.completion.chunk"
	case rs.req.chat:
		return "chat.completion"
	}
	return "text_completion"
}

func (rs *responder) response(chunk bool, choices ...choiceJSON) responseJSON {
	r := responseJSON{ID: rs.id, Object: rs.object(chunk), Created: rs.created, Model: rs.model, Choices: choices}
	if choices == nil {
		r.Choices = []choiceJSON{}
	}
	if chunk && rs.req.includeUsage {
		// OpenAI sends "usage": null on every chunk but the usage one.
		r.Usage = json.RawMessage("null")
	}
	return r
}

// full is the non-streamed response.
func (rs *responder) full(text string, lps []*tandemv1.TokenLogprobs, last *tandemv1.GenerateResponse) responseJSON {
	ch := choiceJSON{Logprobs: rs.logprobs(lps), FinishReason: finishReason(last.FinishReason)}
	if rs.req.chat {
		ch.Message = &chatMessage{Role: "assistant", Content: text}
	} else {
		ch.Text = &text
	}
	r := rs.response(false, ch)
	r.Usage = usageOf(last.Usage)
	return r
}

// roleChunk opens a chat stream, as OpenAI's does.
func (rs *responder) roleChunk() responseJSON {
	empty := ""
	return rs.response(true, choiceJSON{Delta: &chatDelta{Role: "assistant", Content: &empty}})
}

// chunk is a streamed piece; last, when not nil, is the request's final
// message and sets the finish reason.
func (rs *responder) chunk(text string, lps []*tandemv1.TokenLogprobs, last *tandemv1.GenerateResponse) responseJSON {
	ch := choiceJSON{Logprobs: rs.logprobs(lps)}
	if last != nil {
		ch.FinishReason = finishReason(last.FinishReason)
	}
	if rs.req.chat {
		ch.Delta = &chatDelta{}
		if text != "" {
			ch.Delta.Content = &text
		}
	} else {
		ch.Text = &text
	}
	return rs.response(true, ch)
}

// usageChunk is the stream's last chunk when include_usage asks for it.
func (rs *responder) usageChunk(u *tandemv1.Usage) responseJSON {
	r := rs.response(true)
	r.Usage = usageOf(u)
	return r
}

func finishReason(r tandemv1.FinishReason) *string {
	var s string
	switch r {
	case tandemv1.FinishReason_FINISH_REASON_STOP:
		s = "stop"
	case tandemv1.FinishReason_FINISH_REASON_LENGTH:
		s = "length"
	case tandemv1.FinishReason_FINISH_REASON_ABORT:
		s = "stop" // OpenAI's set has no "abort"; strict clients reject others
	case tandemv1.FinishReason_FINISH_REASON_TIMEOUT:
		s = "length"
	case tandemv1.FinishReason_FINISH_REASON_ERROR:
		s = "error"
	default:
		return nil
	}
	return &s
}

// advance moves the completions text offset past a token, counting the
// characters its bytes complete: a character split across tokens counts
// once, where it ends, as it does in the text.
func (rs *responder) advance(c *tandemv1.Logprob) {
	b := c.GetTokenBytes()
	if len(b) == 0 {
		b = []byte(c.GetText())
	}
	rs.partial = append(rs.partial, b...)
	n := len(rs.partial)
	// Hold back the start of a character whose bytes have not all come.
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax; i-- {
		if utf8.RuneStart(rs.partial[i]) {
			if !utf8.FullRune(rs.partial[i:]) {
				n = i
			}
			break
		}
	}
	rs.textOffset += utf8.RuneCount(rs.partial[:n])
	rs.partial = append(rs.partial[:0], rs.partial[n:]...)
}

// logprobs renders log-probabilities in the endpoint's format, or nil
// (JSON null) when the request did not ask for them.
func (rs *responder) logprobs(lps []*tandemv1.TokenLogprobs) any {
	if !rs.req.gen.Sampling.Logprobs {
		return nil
	}
	if rs.req.chat {
		out := chatLogprobs{Content: []chatTokenLogprob{}}
		for _, lp := range lps {
			c := lp.GetChosen()
			t := chatTokenLogprob{Token: c.GetText(), Logprob: finiteLogprob(c.GetLogprob()), Bytes: byteInts(c.GetTokenBytes()), TopLogprobs: []chatTopLogprob{}}
			for _, top := range lp.GetTop() {
				t.TopLogprobs = append(t.TopLogprobs, chatTopLogprob{top.GetText(), finiteLogprob(top.GetLogprob()), byteInts(top.GetTokenBytes())})
			}
			out.Content = append(out.Content, t)
		}
		return out
	}
	out := completionLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []orderedLogprobs{}, TextOffset: []int{}}
	for _, lp := range lps {
		c := lp.GetChosen()
		out.Tokens = append(out.Tokens, c.GetText())
		out.TokenLogprobs = append(out.TokenLogprobs, finiteLogprob(c.GetLogprob()))
		out.TopLogprobs = append(out.TopLogprobs, lp.GetTop())
		out.TextOffset = append(out.TextOffset, rs.textOffset)
		rs.advance(c)
	}
	return out
}

// completionLogprobs is /v1/completions' logprobs object.
type completionLogprobs struct {
	Tokens        []string          `json:"tokens"`
	TokenLogprobs []float64         `json:"token_logprobs"`
	TopLogprobs   []orderedLogprobs `json:"top_logprobs"`
	TextOffset    []int             `json:"text_offset"`
}

// orderedLogprobs is one position's {token text: logprob} object, most
// likely first; a text seen twice (two ids decoding alike) keeps its first.
type orderedLogprobs []*tandemv1.Logprob

func (o orderedLogprobs) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	seen := make(map[string]bool, len(o))
	for _, lp := range o {
		if seen[lp.GetText()] {
			continue
		}
		if len(seen) > 0 {
			b = append(b, ',')
		}
		seen[lp.GetText()] = true
		k, err := json.Marshal(lp.GetText())
		if err != nil {
			return nil, err
		}
		b = append(b, k...)
		b = append(b, ':')
		b = strconv.AppendFloat(b, finiteLogprob(lp.GetLogprob()), 'g', -1, 32)
	}
	return append(b, '}'), nil
}

// chatLogprobs is /v1/chat/completions' logprobs object.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float64          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// finiteLogprob keeps JSON valid: a token of probability 0 (log -Inf) is
// reported as -9999, as vLLM does.
func finiteLogprob(f float32) float64 {
	if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
		return -9999
	}
	return float64(f)
}

// byteInts renders bytes as a JSON array of numbers, as OpenAI does.
func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

type errorJSON struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func errorBody(e *apiError) any {
	body := struct {
		Error errorJSON `json:"error"`
	}{errorJSON{Message: e.message, Type: e.typ}}
	if e.param != "" {
		body.Error.Param = &e.param
	}
	if e.code != "" {
		body.Error.Code = &e.code
	}
	return body
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, errorBody(e))
}

// marshal encodes v as JSON without escaping <, > and &, which stay
// readable in error messages.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = marshal(errorBody(&apiError{typ: "server_error", message: "encoding the response: " + err.Error()}))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// sseWriter writes a server-sent event stream, flushing every event.
type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// timeout bounds one event's write (Options.WriteTimeout): a client
	// that stays connected but stops reading would otherwise hold its
	// request, and its KV, until it ends. The write fails, the request is
	// aborted on its groups and the connection is closed.
	timeout time.Duration
	log     *slog.Logger // says so when that happens
	err     error        // the write that failed; nothing more is written
}

func (s *sseWriter) start() {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// Proxies such as nginx would otherwise buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

func (s *sseWriter) event(v any) error {
	if s.err != nil {
		return s.err
	}
	// Not every ResponseWriter supports deadlines (httptest's recorder does
	// not); where it cannot, the write goes on without one.
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	err := writeSSE(s.w, v)
	if err == nil {
		err = s.rc.Flush()
	}
	if errors.Is(err, os.ErrDeadlineExceeded) && s.log != nil {
		s.log.Warn("a client read nothing for the write timeout; its request is aborted", "write_timeout", s.timeout)
	}
	s.err = err
	return err
}

func (s *sseWriter) done() {
	if s.err != nil {
		return
	}
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	io.WriteString(s.w, sseDone)
	s.rc.Flush()
	// The connection may serve another request: no deadline left behind.
	_ = s.rc.SetWriteDeadline(time.Time{})
}

// sseDone ends an OpenAI event stream.
const sseDone = "data: [DONE]\n\n"

// writeSSE writes v as one server-sent event: "data: <json>\n\n".
func writeSSE(w io.Writer, v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, len(b)+8)
	buf = append(buf, "data: "...)
	buf = append(buf, b...)
	buf = append(buf, "\n\n"...)
	_, err = w.Write(buf)
	return err
}
