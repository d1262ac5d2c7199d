package cluster

import (
	"strings"
	"testing"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Every role goes onto the wire and back under the same word, and
// nothing else parses as a role.
func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  Role
		proto tandemv1.Role
	}{
		{"prefill", RolePrefill, tandemv1.Role_ROLE_PREFILL},
		{"decode", RoleDecode, tandemv1.Role_ROLE_DECODE},
		{"unified", RoleUnified, tandemv1.Role_ROLE_UNIFIED},
		{"", "", tandemv1.Role_ROLE_UNSPECIFIED},
		{"Prefill", "", tandemv1.Role_ROLE_UNSPECIFIED},
		{"both", "", tandemv1.Role_ROLE_UNSPECIFIED},
	} {
		r, err := ParseRole(tc.in)
		switch {
		case tc.want == "" && (err == nil || !strings.Contains(err.Error(), "prefill, decode or unified")):
			t.Errorf("ParseRole(%q) = %q, %v; want an error naming the roles", tc.in, r, err)
		case tc.want != "" && (err != nil || r != tc.want):
			t.Errorf("ParseRole(%q) = %q, %v; want %q", tc.in, r, err, tc.want)
		}
		if p := Role(tc.in).Proto(); p != tc.proto {
			t.Errorf("Role(%q).Proto() = %v, want %v", tc.in, p, tc.proto)
		}
		if tc.want != "" && tc.proto.Name() != tc.in {
			t.Errorf("%v.Name() = %q, want %q", tc.proto, tc.proto.Name(), tc.in)
		}
	}
}
