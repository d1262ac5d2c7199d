package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadIDList is wrapped by ParseIDs errors.
var ErrBadIDList = errors.New("bad token id list")

// ParseIDs reads token ids written as a JSON array ("[1, 2]") or separated
// by spaces, newlines or commas ("1 2", "1,2"). An entry that is not an
// integer in int32 range gives an error naming it and its position.
func ParseIDs(s string) ([]int32, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var raw []json.Number
		if err := json.Unmarshal([]byte(s), &raw); err != nil {
			return nil, fmt.Errorf("%w: not a JSON array of numbers: %w", ErrBadIDList, err)
		}
		ids := make([]int32, len(raw))
		for i, n := range raw {
			id, err := parseID(string(n), i)
			if err != nil {
				return nil, err
			}
			ids[i] = id
		}
		return ids, nil
	}
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	ids := make([]int32, len(fields))
	for i, f := range fields {
		id, err := parseID(f, i)
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

func parseID(s string, pos int) (int32, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < math.MinInt32 || v > math.MaxInt32 {
		return 0, fmt.Errorf("%w: id %q at position %d is not an integer token id", ErrBadIDList, s, pos)
	}
	return int32(v), nil
}
