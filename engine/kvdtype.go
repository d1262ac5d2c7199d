package engine

import (
	"fmt"
	"strings"

	"github.com/tandemllm/tandem/compute"
)

// KVCacheDType is a KV cache element type as `--kv-cache-dtype` names it.
type KVCacheDType string

// The KV cache dtypes. KVAuto (also the empty value) is what the backend
// suits to the model's weights: on the CPU the weights' dtype (as vLLM's
// auto is the model's), on CUDA BF16.
const (
	KVAuto KVCacheDType = "auto"
	KVFP32 KVCacheDType = "fp32"
	KVBF16 KVCacheDType = "bf16"
	KVFP16 KVCacheDType = "fp16"
)

// ParseKVCacheDType reads a `--kv-cache-dtype` value: auto, fp32, bf16 or
// fp16 (float32, bfloat16, float16 and half are accepted as their long
// names).
func ParseKVCacheDType(s string) (KVCacheDType, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return KVAuto, nil
	case "fp32", "float32", "f32":
		return KVFP32, nil
	case "bf16", "bfloat16":
		return KVBF16, nil
	case "fp16", "float16", "f16", "half":
		return KVFP16, nil
	}
	return "", fmt.Errorf("engine: KV cache dtype %q: want auto, fp32, bf16 or fp16", s)
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
	case KVFP16:
		return compute.F16, nil
	}
	return 0, fmt.Errorf("engine: KV cache dtype %q: want auto, fp32, bf16 or fp16", string(d))
}

// kvCacheDTypeOf names a cache's compute dtype as --kv-cache-dtype does.
func kvCacheDTypeOf(d compute.DType) KVCacheDType {
	switch d {
	case compute.BF16:
		return KVBF16
	case compute.F16:
		return KVFP16
	}
	return KVFP32
}
