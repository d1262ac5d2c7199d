// Command gpt2json writes GPT-2's tokenizer.json (tokenizer.GPT2JSON) to
// stdout, for cross-checking it with other implementations; see
// testdata/golden/gen.mjs.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/tandemllm/tandem/model/tokenizer"
)

func main() {
	padTo := flag.Int("pad-to", 0, "pad the vocabulary with reserved special tokens to this size")
	flag.Parse()
	data, err := tokenizer.GPT2JSON(*padTo)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(data); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
