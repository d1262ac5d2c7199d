package safetensors_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/tandemllm/tandem/model/safetensors"
)

func Example() {
	dir, err := os.MkdirTemp("", "example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, safetensors.SingleFile)
	err = safetensors.Write(path, []safetensors.Tensor{
		{Name: "w", DType: safetensors.BF16, Shape: []int{2}, Data: []byte{0x80, 0x3f, 0x00, 0xc0}}, // 1, -2
	}, map[string]string{"format": "pt"})
	if err != nil {
		log.Fatal(err)
	}

	set, err := safetensors.OpenDir(dir)
	if err != nil {
		log.Fatal(err)
	}
	defer set.Close()
	t, err := set.Tensor("w")
	if err != nil {
		log.Fatal(err)
	}
	vals, err := t.Float32s()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(set.Names(), t.DType, t.Shape, vals)
	// Output: [w] BF16 [2] [1 -2]
}
