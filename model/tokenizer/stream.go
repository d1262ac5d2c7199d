package tokenizer

import (
	"bytes"
	"fmt"
)

// StreamDecoder turns ids into text one at a time, as they are generated.
// Each Add returns only newly completed text: bytes of a character that is
// not complete yet are held back, so the output never splits a UTF-8
// character. Concatenating every Add result and the final Flush gives
// exactly Decode of all the ids. With a ByteFallback decoder a run of
// <0xXX> tokens is held until a token that ends it arrives, because a bad
// byte late in a run changes how all of it decodes. A StreamDecoder is not
// safe for concurrent use.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	// ids[:read] have been emitted; ids[:prefix] are context no longer
	// needed. Decoding starts at prefix so that decoders that treat the
	// first token specially (Metaspace, Strip) see the same context as a
	// full decode would at that point.
	ids          []int32
	prefix, read int
}

// NewStreamDecoder returns an incremental decoder; skipSpecial leaves out
// special tokens as Decode does.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial}
}

// Add appends id and returns the text it completes, possibly "".
func (d *StreamDecoder) Add(id int32) (string, error) {
	if _, ok := d.t.Token(id); !ok {
		return "", fmt.Errorf("%w: %d (vocabulary size %d)", ErrUnknownID, id, d.t.VocabSize())
	}
	if d.skipSpecial && d.t.IsSpecial(id) {
		return "", nil
	}
	d.ids = append(d.ids, id)
	if d.t.byteRuns {
		// ByteFallback decodes a whole run of <0xXX> tokens at once, and a
		// bad byte late in a run turns all of it into U+FFFD, so a run can
		// only be emitted once a token that ends it has arrived.
		if _, isByte := byteFallbackToken(d.t.idToToken[id]); isByte {
			return "", nil
		}
	}
	done, err := d.t.decodeRaw(d.ids[d.prefix:d.read], false)
	if err != nil {
		return "", err
	}
	all, err := d.t.decodeRaw(d.ids[d.prefix:], false)
	if err != nil {
		return "", err
	}
	if len(all) <= len(done) || !bytes.HasPrefix([]byte(all), []byte(done)) {
		return "", nil
	}
	fresh := all[len(done):]
	// Wait while the text may end inside a character: raw bytes that need
	// more, or U+FFFD from a decoder (ByteFallback) that already replaced
	// an incomplete character.
	if incompleteTail([]byte(fresh)) > 0 || bytes.HasSuffix([]byte(fresh), []byte("\uFFFD")) {
		return "", nil
	}
	d.prefix, d.read = d.read, len(d.ids)
	d.compact()
	return lossyUTF8([]byte(fresh)), nil
}

// Flush returns whatever text is held back, with any incomplete character
// replaced by U+FFFD, and resets the decoder for a new sequence.
func (d *StreamDecoder) Flush() string {
	done, err1 := d.t.decodeRaw(d.ids[d.prefix:d.read], false)
	all, err2 := d.t.decodeRaw(d.ids[d.prefix:], false)
	d.ids, d.prefix, d.read = d.ids[:0], 0, 0
	// Add has validated every id, so decoding cannot fail here.
	if err1 != nil || err2 != nil || len(all) <= len(done) {
		return ""
	}
	return lossyUTF8([]byte(all[len(done):]))
}

// compact drops ids that no longer matter so that a long generation keeps
// the decoder's memory and per-token work constant.
func (d *StreamDecoder) compact() {
	if d.prefix < 64 {
		return
	}
	n := copy(d.ids, d.ids[d.prefix:])
	d.ids = d.ids[:n]
	d.read -= d.prefix
	d.prefix = 0
}
