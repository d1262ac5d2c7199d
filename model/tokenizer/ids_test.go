package tokenizer

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseIDs(t *testing.T) {
	tests := []struct {
		in      string
		want    []int32
		wantErr string
	}{
		{"1 2 3", []int32{1, 2, 3}, ""},
		{" 1,2,\n3\t4 ", []int32{1, 2, 3, 4}, ""},
		{"[1, 2, 3]", []int32{1, 2, 3}, ""},
		{"[]", []int32{}, ""},
		{"", []int32{}, ""},
		{"-5", []int32{-5}, ""},
		{"1 x 3", nil, `id "x" at position 1`},
		{"[1, 2.5]", nil, `id "2.5" at position 1`},
		{"[1, \"a\"]", nil, "not a JSON array"},
		{"99999999999", nil, `id "99999999999" at position 0`},
	}
	for _, tt := range tests {
		got, err := ParseIDs(tt.in)
		if tt.wantErr != "" {
			if !errors.Is(err, ErrBadIDList) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseIDs(%q) error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseIDs(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}
