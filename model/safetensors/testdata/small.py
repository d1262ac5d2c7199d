# Builds small.safetensors with the standard library only, following the
# published format, so the reader is checked against bytes that Tandem's
# writer did not produce. Run from this directory: python3 small.py
import json, struct

t = {
    "__metadata__": {"format": "pt"},
    "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "b.bf16": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]},
    "c.f16": {"dtype": "F16", "shape": [2], "data_offsets": [32, 36]},
    "d.i64": {"dtype": "I64", "shape": [], "data_offsets": [36, 44]},
    "e.empty": {"dtype": "F32", "shape": [0, 5], "data_offsets": [44, 44]},
}
data = struct.pack("<6f", 1, -2, 3.5, 0.25, 1e-3, -7)
data += struct.pack("<4H", 0x3F80, 0xC000, 0x7F80, 0x0001)  # 1, -2, +Inf, tiny subnormal
data += struct.pack("<2H", 0x3C00, 0xFBFF)  # 1, -65504
data += struct.pack("<q", -42)
h = json.dumps(t).encode()
open("small.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + data)
