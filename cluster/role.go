package cluster

import (
	"fmt"

	tandemv1 "github.com/tandemllm/tandem/proto/tandem/v1"
)

// Role is what a worker group does. Its string is what registrations in
// etcd, the --role flag and metric labels carry; Proto
// converts it to the wire enum (whose Name is this string again), so no
// other package maps roles.
type Role string

// The roles of a worker group.
const (
	RolePrefill Role = "prefill" // computes prompts and sends their KV to decode groups
	RoleDecode  Role = "decode"  // continues prefilled requests
	RoleUnified Role = "unified" // both, colocated
)

// ParseRole reads a role's string; the error names the valid ones.
func ParseRole(s string) (Role, error) {
	if r := Role(s); r.Valid() {
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (want %s, %s or %s)", s, RolePrefill, RoleDecode, RoleUnified)
}

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool {
	return r == RolePrefill || r == RoleDecode || r == RoleUnified
}

// Proto is r on the wire (ROLE_UNSPECIFIED for an invalid role).
func (r Role) Proto() tandemv1.Role {
	switch r {
	case RolePrefill:
		return tandemv1.Role_ROLE_PREFILL
	case RoleDecode:
		return tandemv1.Role_ROLE_DECODE
	case RoleUnified:
		return tandemv1.Role_ROLE_UNIFIED
	}
	return tandemv1.Role_ROLE_UNSPECIFIED
}
