package cuda

import (
	"embed"
	"fmt"
	"strings"
)

// The kernels are CUDA C++ compiled by NVRTC at start-up for the GPU at
// hand; see doc.go.
//
//go:embed kernels/*.cu
var kernelFS embed.FS

// kernelFiles is the order the files are joined in: helpers first.
func kernelFiles() []string {
	return []string{"common.cu", "elementwise.cu", "norm.cu", "kv.cu", "attention.cu", "sample.cu"}
}

// kernelSource is the one program NVRTC compiles. #line directives make
// compiler messages name the embedded file and line.
func kernelSource() (string, error) {
	var sb strings.Builder
	for _, f := range kernelFiles() {
		b, err := kernelFS.ReadFile("kernels/" + f)
		if err != nil {
			return "", fmt.Errorf("cuda: embedded kernel %s: %w", f, err)
		}
		fmt.Fprintf(&sb, "#line 1 %q\n", f)
		sb.Write(b)
		sb.WriteByte('\n')
	}
	return sb.String(), nil
}

// kernel identifies one __global__ function of the program.
type kernel int

const (
	kEmbedF32 kernel = iota
	kEmbedBF16
	kEmbedF16
	kGatherRows
	kAddBias
	kAdd
	kSiLUMul
	kGELU
	kToBF16
	kToF16
	kRMSNorm
	kAddRMSNorm
	kLayerNorm
	kRoPE
	kKVWrite
	kKVWriteBF16
	kKVPack
	kKVPackBF16
	kKVUnpack
	kKVUnpackBF16
	kAttnDecode
	kAttnDecodeBF16
	kAttnCombine
	kAttnPrefill
	kAttnPrefillBF16
	kArgmax
	kSample
	numKernels
)

// kernelSpec is a kernel's C name and parameter types, in order: the
// launch table. Every launch is checked against it, and a test checks it
// against the declarations in the embedded sources.
type kernelSpec struct {
	name   string
	params []argKind
}

// kernelTable is the launch table, indexed by kernel.
func kernelTable() [numKernels]kernelSpec {
	const p, i, l, f = argPtr, argI32, argI64, argF32
	return [numKernels]kernelSpec{
		kEmbedF32:        {"embed_f32", []argKind{p, p, p, i, i}},
		kEmbedBF16:       {"embed_bf16", []argKind{p, p, p, i, i}},
		kEmbedF16:        {"embed_f16", []argKind{p, p, p, i, i}},
		kGatherRows:      {"gather_rows", []argKind{p, p, p, i, i}},
		kAddBias:         {"add_bias", []argKind{p, p, i, i}},
		kAdd:             {"add_f32", []argKind{p, p, p, i}},
		kSiLUMul:         {"silu_mul", []argKind{p, p, p, i}},
		kGELU:            {"gelu_tanh", []argKind{p, i}},
		kToBF16:          {"to_bf16", []argKind{p, p, i}},
		kToF16:           {"to_f16", []argKind{p, p, i}},
		kRMSNorm:         {"rms_norm", []argKind{p, p, p, i, i, f}},
		kAddRMSNorm:      {"add_rms_norm", []argKind{p, p, p, p, i, i, f}},
		kLayerNorm:       {"layer_norm", []argKind{p, p, p, p, i, i, f}},
		kRoPE:            {"rope", []argKind{p, p, p, i, i, i}},
		kKVWrite:         {"kv_write", []argKind{p, p, p, p, p, i, i, i, i, l}},
		kKVWriteBF16:     {"kv_write_bf16", []argKind{p, p, p, p, p, i, i, i, i, l}},
		kKVPack:          {"kv_pack", []argKind{p, p, p, p, i, i, i, i, i, i, l}},
		kKVPackBF16:      {"kv_pack_bf16", []argKind{p, p, p, p, i, i, i, i, i, i, l}},
		kKVUnpack:        {"kv_unpack", []argKind{p, p, p, p, i, i, i, i, i, i, l}},
		kKVUnpackBF16:    {"kv_unpack_bf16", []argKind{p, p, p, p, i, i, i, i, i, i, l}},
		kAttnDecode:      {"attn_decode", []argKind{p, p, p, p, p, p, p, p, i, i, i, i, l, f, i}},
		kAttnDecodeBF16:  {"attn_decode_bf16", []argKind{p, p, p, p, p, p, p, p, i, i, i, i, l, f, i}},
		kAttnCombine:     {"attn_combine", []argKind{p, p, p, p, i, i, i}},
		kAttnPrefill:     {"attn_prefill", []argKind{p, p, p, p, p, p, p, i, i, i, i, l, f}},
		kAttnPrefillBF16: {"attn_prefill_bf16", []argKind{p, p, p, p, p, p, p, i, i, i, i, l, f}},
		kArgmax:          {"argmax_rows", []argKind{p, p, i, i}},
		kSample:          {"sample_rows", []argKind{p, p, p, p, i, i}},
	}
}

// checkArgs reports a launch whose arguments do not match the table: a
// mistake in this package, caught before the GPU reads garbage.
func (s kernelSpec) checkArgs(args []arg) error {
	if len(args) != len(s.params) {
		return fmt.Errorf("cuda: %s takes %d arguments, launched with %d", s.name, len(s.params), len(args))
	}
	for i, a := range args {
		if a.kind != s.params[i] {
			return fmt.Errorf("cuda: %s argument %d is %v, launched with %v", s.name, i, s.params[i], a.kind)
		}
	}
	return nil
}

func (k argKind) String() string {
	switch k {
	case argPtr:
		return "pointer"
	case argI32:
		return "int"
	case argI64:
		return "long long"
	case argF32:
		return "float"
	}
	return fmt.Sprintf("argKind(%d)", uint8(k))
}

// Tuning constants shared with the kernels' #defines.
const (
	maxHeadDim     = 256 // MAX_HD
	decodeThreads  = 128 // DEC_WARPS warps
	prefillThreads = 128 // 4 warps of PF_QPW rows
	prefillBQ      = 16  // PF_BQ
	prefillBK      = 32  // PF_BK
	sampleThreads  = 256 // SAMPLE_THREADS
)

// prefillShared is attn_prefill's dynamic shared memory in bytes.
func prefillShared(hd int) int {
	return 4 * (prefillBQ*hd + prefillBK*(hd+1) + prefillBK*hd)
}
