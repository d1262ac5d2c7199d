package cpu_test

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tandemllm/tandem/compute"
	"github.com/tandemllm/tandem/compute/cpu"
)

// A 2×3 weight matrix applied to one activation row.
func Example() {
	be, err := cpu.New(cpu.Options{Threads: 2})
	if err != nil {
		panic(err)
	}
	defer be.Close()

	w := []float32{1, 2, 3, 0, -1, 0.5}
	raw := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	mat, err := be.LoadMat(compute.F32, 2, 3, raw) // raw is used in place
	if err != nil {
		panic(err)
	}
	x, y := be.Alloc(3), be.Alloc(2)
	be.Write(x, 0, []float32{1, 1, 2})
	be.MatMul(y, x, mat, 1)
	out := make([]float32, 2)
	be.Read(out, y, 0)
	fmt.Println(out)
	// Output: [9 0]
}
