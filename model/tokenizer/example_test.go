package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/tandemllm/tandem/model/tokenizer"
)

func Example() {
	tok, err := tokenizer.GPT2Tokenizer(0)
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.Encode("Hello, world!", false)
	text, err := tok.Decode(ids, false)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ids, text)
	// Output: [15496 11 995 0] Hello, world!
}

func ExampleStreamDecoder() {
	tok, err := tokenizer.GPT2Tokenizer(0)
	if err != nil {
		log.Fatal(err)
	}
	d := tok.NewStreamDecoder(true)
	for _, id := range tok.Encode("Hi 🎉<|endoftext|>", false) {
		piece, err := d.Add(id)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d -> %q\n", id, piece)
	}
	fmt.Printf("flush -> %q\n", d.Flush())
	// Output:
	// 17250 -> "Hi"
	// 12520 -> ""
	// 236 -> ""
	// 231 -> " 🎉"
	// 50256 -> ""
	// flush -> ""
}
