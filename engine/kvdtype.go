package engine

import (
	"fmt"
	"strings"

	"github.com/tandemllm/tandem/compute"
)

// KVCacheDType is a KV cache element type as `--kv-cache-dtype` names it.
type KVCacheDType string

// The KV cache dtypes. KVAuto (also the empty value) is what the backend
// suits to the model's weights: on the CPU the weights' dtype (BF16
// weights give a BF16 cache; F32 and F16 weights, which the CPU backend
// runs in F32, an F32 one), on CUDA BF16.
const (
	KVAuto KVCacheDType = "auto"
	KVFP32 KVCacheDType = "fp32"
	KVBF16 KVCacheDType = "bf16"
)

// ParseKVCacheDType reads a `--kv-cache-dtype` value: auto, fp32 or bf16
// (float32 and bfloat16 are accepted as their long names).
func ParseKVCacheDType(s string) (KVCacheDType, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return KVAuto, nil
	case "fp32", "float32", "f32":
		return KVFP32, nil
	case "bf16", "bfloat16":
		return KVBF16, nil
	}
	return "", fmt.Errorf("engine: KV cache dtype %q: want auto, fp32 or bf16", s)
}

// resolve is the compute dtype d means for m.
func (d KVCacheDType) resolve(m *Model) (compute.DType, error) {
	switch d {
	case "", KVAuto:
		return m.be.AutoKVDType(m.wdtype), nil
	case KVFP32:
		return compute.F32, nil
	case KVBF16:
		return compute.BF16, nil
	}
	return 0, fmt.Errorf("engine: KV cache dtype %q: want auto, fp32 or bf16", string(d))
}
