package nvidia

import (
	"encoding/base64"
	"fmt"
)

// UniqueIDBytes is NCCL_UNIQUE_ID_BYTES.
const UniqueIDBytes = 128

// UniqueID is an ncclUniqueId: the rendezvous token rank 0 creates with
// Library.NewUniqueID and every rank passes to NewComm. It holds rank 0's
// bootstrap address, so it is only meaningful for one group's lifetime.
//
// It is a struct, not a bare array, because ncclCommInitRank takes
// ncclUniqueId by value and purego passes Go structs by value with the C
// ABI (on linux/amd64 the 128 bytes are copied onto the stack, as System V
// requires for aggregates over 16 bytes; on arm64 a copy is passed by
// reference, as AAPCS64 requires over 16 bytes).
type UniqueID struct {
	internal [UniqueIDBytes]byte
}

// UniqueIDFromBytes wraps the 128 bytes of an ncclUniqueId.
func UniqueIDFromBytes(b []byte) (UniqueID, error) {
	var id UniqueID
	if len(b) != UniqueIDBytes {
		return id, fmt.Errorf("nvidia: unique id is %d bytes, want %d", len(b), UniqueIDBytes)
	}
	copy(id.internal[:], b)
	return id, nil
}

// Bytes is a copy of the id's 128 bytes.
func (id UniqueID) Bytes() []byte { return append([]byte(nil), id.internal[:]...) }

// IsZero reports an id nobody set; NCCL never produces one.
func (id UniqueID) IsZero() bool { return id == UniqueID{} }

// MarshalText encodes the id as standard base64 (172 characters), short
// enough for an etcd value and safe in JSON.
func (id UniqueID) MarshalText() ([]byte, error) {
	out := make([]byte, base64.StdEncoding.EncodedLen(UniqueIDBytes))
	base64.StdEncoding.Encode(out, id.internal[:])
	return out, nil
}

// UnmarshalText decodes MarshalText's form and rejects anything that is
// not exactly 128 bytes, so a truncated etcd value fails here rather than
// as a hang inside ncclCommInitRank.
func (id *UniqueID) UnmarshalText(text []byte) error {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(text)))
	n, err := base64.StdEncoding.Decode(b, text)
	if err != nil {
		return fmt.Errorf("nvidia: unique id: %w", err)
	}
	v, err := UniqueIDFromBytes(b[:n])
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// String is the text form.
func (id UniqueID) String() string {
	b, _ := id.MarshalText()
	return string(b)
}
