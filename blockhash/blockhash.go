package blockhash

import (
	"crypto/sha256"
	"encoding/binary"
)

// Hash identifies a full block and, through its parent, every block
// before it.
type Hash uint64

// Root is the parent of a sequence's first block: the model's identity,
// so that groups serving different models never share hashes.
func Root(model string) Hash {
	h := sha256.New()
	h.Write([]byte("tandem/blockhash/v1\x00"))
	h.Write([]byte(model))
	return Hash(binary.LittleEndian.Uint64(h.Sum(nil)))
}

// Next is the hash of a block holding tokens whose parent's hash is
// parent.
func Next(parent Hash, tokens []int32) Hash {
	buf := make([]byte, 8+4*len(tokens))
	binary.LittleEndian.PutUint64(buf, uint64(parent))
	for i, t := range tokens {
		binary.LittleEndian.PutUint32(buf[8+4*i:], uint32(t))
	}
	sum := sha256.Sum256(buf)
	return Hash(binary.LittleEndian.Uint64(sum[:8]))
}

// Chain appends to dst the hashes of the full blocks of tokens, in
// blocks of blockSize, after the first len(dst) blocks whose hashes dst
// already holds (so a caller can extend a chain as a sequence grows).
// A partial last block has no hash.
func Chain(dst []Hash, model string, tokens []int32, blockSize int) []Hash {
	if blockSize <= 0 {
		return dst
	}
	parent := Root(model)
	if n := len(dst); n > 0 {
		parent = dst[n-1]
	}
	for i := len(dst); (i+1)*blockSize <= len(tokens); i++ {
		parent = Next(parent, tokens[i*blockSize:(i+1)*blockSize])
		dst = append(dst, parent)
	}
	return dst
}
