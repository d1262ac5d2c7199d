package engine

import (
	"errors"
	"fmt"
)

// ErrOutOfBlocks is returned when the KV block pool cannot hold a sequence.
var ErrOutOfBlocks = errors.New("engine: out of KV cache blocks")

// blockPool hands out KV cache block ids. Blocks are recycled LIFO so a
// recently freed (cache-warm) block is reused first.
type blockPool struct {
	blockSize int
	free      []int32
	total     int
}

func newBlockPool(numBlocks, blockSize int) *blockPool {
	p := &blockPool{blockSize: blockSize, total: numBlocks, free: make([]int32, numBlocks)}
	for i := range p.free {
		p.free[i] = int32(numBlocks - 1 - i)
	}
	return p
}

// Free is the number of unallocated blocks.
func (p *blockPool) Free() int { return len(p.free) }

// blocksFor is how many blocks n tokens occupy.
func (p *blockPool) blocksFor(n int) int { return (n + p.blockSize - 1) / p.blockSize }

// grow extends table so it covers n tokens, allocating new blocks.
func (p *blockPool) grow(table []int32, n int) ([]int32, error) {
	need := p.blocksFor(n) - len(table)
	if need <= 0 {
		return table, nil
	}
	if need > len(p.free) {
		return table, fmt.Errorf("%w: need %d more, %d free of %d", ErrOutOfBlocks, need, len(p.free), p.total)
	}
	for range need {
		last := len(p.free) - 1
		table = append(table, p.free[last])
		p.free = p.free[:last]
	}
	return table, nil
}

// release returns every block of table to the pool.
func (p *blockPool) release(table []int32) {
	p.free = append(p.free, table...)
}

// slots appends, for token positions [from, to), the cache slot of each
// position under table.
func (p *blockPool) slots(dst []int32, table []int32, from, to int) []int32 {
	for pos := from; pos < to; pos++ {
		dst = append(dst, table[pos/p.blockSize]*int32(p.blockSize)+int32(pos%p.blockSize))
	}
	return dst
}
