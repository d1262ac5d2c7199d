package dataset

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
)

// FileOptions shape the datasets read from a file.
type FileOptions struct {
	// Path is the dataset file (--dataset-path).
	Path string
	// Num is the number of prompts; when the file has fewer usable
	// entries they are used again in order.
	Num int
	// OutputLen, when > 0, is every request's output length; otherwise
	// each entry's own (ShareGPT: the first reply's token count; JSONL:
	// its output_tokens, else DefaultOutputLen).
	OutputLen int
	// Seed orders the ShareGPT sample.
	Seed uint64
}

// DefaultOutputLen is the output length of a JSONL line without
// output_tokens when FileOptions.OutputLen is 0 (vllm bench serve's
// custom dataset default).
const DefaultOutputLen = 256

// ShareGPT limits, as vllm bench serve filters its sample: prompts and
// replies of at least 4 tokens, prompts of at most 1024, pairs of at most
// 2048.
const (
	shareGPTMinLen    = 4
	shareGPTMaxPrompt = 1024
	shareGPTMaxTotal  = 2048
)

// shareGPTEntry is one conversation of a ShareGPT file.
type shareGPTEntry struct {
	Conversations []struct {
		From  string `json:"from"`
		Value string `json:"value"`
	} `json:"conversations"`
}

// ShareGPT reads a ShareGPT JSON file (an array of {"conversations":
// [{"from", "value"}...]}): each conversation's first turn is a prompt
// and the second its reference reply. Conversations are shuffled with the
// seed; those outside the length limits are skipped.
func ShareGPT(tok Tokenizer, o FileOptions) ([]Request, error) {
	data, err := readFile(o)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('[') {
		return nil, fileError(o.Path, data, dec.InputOffset(), errors.New("a ShareGPT file is a JSON array of conversations"))
	}
	var entries []shareGPTEntry
	for dec.More() {
		at := entryStart(data, dec.InputOffset())
		var e shareGPTEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fileError(o.Path, data, at, fmt.Errorf("conversation %d: %w", len(entries)+1, err))
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fileError(o.Path, data, dec.InputOffset(), err)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x5ea6))
	rng.Shuffle(len(entries), func(i, j int) { entries[i], entries[j] = entries[j], entries[i] })
	var reqs []Request
	for _, e := range entries {
		if len(e.Conversations) < 2 {
			continue
		}
		prompt := e.Conversations[0].Value
		n := len(tok.Encode(prompt, true))
		out := o.OutputLen
		if out <= 0 {
			out = len(tok.Encode(e.Conversations[1].Value, false))
			if out < shareGPTMinLen {
				continue
			}
		}
		if n < shareGPTMinLen || n > shareGPTMaxPrompt || n+out > shareGPTMaxTotal {
			continue
		}
		reqs = append(reqs, Request{Prompt: prompt, PromptLen: n, OutputLen: out})
		if len(reqs) == o.Num {
			break
		}
	}
	return fill(o, reqs)
}

// jsonlLine is one line of a JSONL dataset.
type jsonlLine struct {
	Prompt       *string `json:"prompt"`
	OutputTokens *int    `json:"output_tokens"`
}

// JSONL reads one JSON object a line: {"prompt": TEXT, "output_tokens":
// N}, output_tokens optional; blank lines are skipped. Prompts are used
// in file order.
func JSONL(tok Tokenizer, o FileOptions) ([]Request, error) {
	data, err := readFile(o)
	if err != nil {
		return nil, err
	}
	var reqs []Request
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var l jsonlLine
		if err := json.Unmarshal(text, &l); err != nil {
			return nil, fmt.Errorf("%w: --dataset-path %s: line %d: %v", ErrInvalid, o.Path, line, err)
		}
		switch {
		case l.Prompt == nil:
			return nil, fmt.Errorf("%w: --dataset-path %s: line %d: no \"prompt\"", ErrInvalid, o.Path, line)
		case *l.Prompt == "":
			return nil, fmt.Errorf("%w: --dataset-path %s: line %d: empty \"prompt\"", ErrInvalid, o.Path, line)
		case l.OutputTokens != nil && *l.OutputTokens < 1:
			return nil, fmt.Errorf("%w: --dataset-path %s: line %d: \"output_tokens\" %d: must be >= 1", ErrInvalid, o.Path, line, *l.OutputTokens)
		}
		out := o.OutputLen
		if out <= 0 {
			out = DefaultOutputLen
			if l.OutputTokens != nil {
				out = *l.OutputTokens
			}
		}
		// Every line is checked; only those used are tokenized.
		if len(reqs) < o.Num {
			reqs = append(reqs, Request{Prompt: *l.Prompt, PromptLen: len(tok.Encode(*l.Prompt, true)), OutputLen: out})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: --dataset-path %s: %v", ErrInvalid, o.Path, err)
	}
	return fill(o, reqs)
}

func readFile(o FileOptions) ([]byte, error) {
	if o.Num < 1 {
		return nil, fmt.Errorf("%w: --num-prompts %d: must be >= 1", ErrInvalid, o.Num)
	}
	if o.Path == "" {
		return nil, fmt.Errorf("%w: --dataset-path is required for this dataset", ErrInvalid)
	}
	data, err := os.ReadFile(o.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: --dataset-path: %v", ErrInvalid, err)
	}
	return data, nil
}

// fill repeats reqs in order up to o.Num entries.
func fill(o FileOptions, reqs []Request) ([]Request, error) {
	if len(reqs) == 0 {
		return nil, fmt.Errorf("%w: --dataset-path %s: no usable prompt", ErrInvalid, o.Path)
	}
	for i := 0; len(reqs) < o.Num; i++ {
		reqs = append(reqs, reqs[i])
	}
	return reqs, nil
}

// entryStart is the offset of the array element that follows off: past
// the separating comma and white space.
func entryStart(data []byte, off int64) int64 {
	for off < int64(len(data)) && bytes.IndexByte([]byte(" \t\r\n,"), data[off]) >= 0 {
		off++
	}
	return off
}

// fileError names the file and the line holding byte offset off (the
// last line when off < 0).
func fileError(path string, data []byte, off int64, err error) error {
	if off < 0 || off > int64(len(data)) {
		off = int64(len(data))
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	return fmt.Errorf("%w: --dataset-path %s: line %d: %v", ErrInvalid, path, line, err)
}
