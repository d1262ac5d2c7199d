package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/model/tokenizer"
)

// tokenizeFlags are the flags of `tandem tokenize`.
type tokenizeFlags struct {
	file        string
	jsonOut     bool
	decode      bool
	addSpecial  bool
	skipSpecial bool
}

func newTokenizeCmd() *cobra.Command {
	var f tokenizeFlags
	cmd := &cobra.Command{
		Use:   "tokenize --tokenizer FILE [--json] [--decode] [--add-special]",
		Short: "Encode text from stdin to token ids, or decode ids to text",
		Long: `Encode the text read from stdin with a Hugging Face tokenizer.json and print
the token ids, space-separated or, with --json, as a JSON array. The text is
used exactly as read, so a trailing newline (as echo writes) is encoded too.

With --decode, read token ids (space- or comma-separated, or a JSON array) and
print their text; with --json the text is printed as a JSON string.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.file == "" {
				return errors.New("--tokenizer FILE is required")
			}
			tok, err := tokenizer.Load(f.file)
			if err != nil {
				return err
			}
			in, err := io.ReadAll(cmd.InOrStdin())
			if err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
			if f.decode {
				return runDecode(cmd.OutOrStdout(), tok, string(in), &f)
			}
			return runEncode(cmd.OutOrStdout(), tok, string(in), &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.file, "tokenizer", "", "tokenizer.json file")
	fl.BoolVar(&f.jsonOut, "json", false, "print JSON (an array of ids, or the decoded text as a string)")
	fl.BoolVar(&f.decode, "decode", false, "read token ids and print their text")
	fl.BoolVar(&f.addSpecial, "add-special", false, "add the tokenizer's special tokens (e.g. BOS) when encoding")
	fl.BoolVar(&f.skipSpecial, "skip-special", false, "leave special tokens out when decoding")
	return cmd
}

func runEncode(out io.Writer, tok *tokenizer.Tokenizer, text string, f *tokenizeFlags) error {
	ids := tok.Encode(text, f.addSpecial)
	if f.jsonOut {
		if ids == nil {
			ids = []int32{}
		}
		return json.NewEncoder(out).Encode(ids)
	}
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.Itoa(int(id))
	}
	_, err := fmt.Fprintln(out, strings.Join(parts, " "))
	return err
}

func runDecode(out io.Writer, tok *tokenizer.Tokenizer, in string, f *tokenizeFlags) error {
	ids, err := tokenizer.ParseIDs(in)
	if err != nil {
		return err
	}
	text, err := tok.Decode(ids, f.skipSpecial)
	if err != nil {
		return err
	}
	if f.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		return enc.Encode(text)
	}
	_, err = io.WriteString(out, text)
	return err
}
