package simulator

import (
	"errors"
	"fmt"

	"github.com/tandemllm/tandem/cluster"
)

// Serving modes, as `tandem up --mode` names them.
const (
	ModeUnified       = "unified"
	ModeDisaggregated = "disaggregated"
)

// Group roles, as the workers register them.
const (
	rolePrefill = cluster.RolePrefill
	roleDecode  = cluster.RoleDecode
	roleUnified = cluster.RoleUnified
)

// ErrInvalidDeployment is wrapped by every deployment validation error.
var ErrInvalidDeployment = errors.New("invalid deployment")

// Pool is a number of identical groups of one role.
type Pool struct {
	Groups int `json:"groups"`
	TP     int `json:"tp"`
}

// GPUs is the devices (or, on CPUs, the ranks) the pool occupies.
func (p Pool) GPUs() int { return p.Groups * p.TP }

// Deployment is the groups serving a model: unified groups, or prefill
// and decode groups.
type Deployment struct {
	Mode    string `json:"mode"`
	Unified Pool   `json:"unified,omitzero"`
	Prefill Pool   `json:"prefill,omitzero"`
	Decode  Pool   `json:"decode,omitzero"`
}

// GPUs is the devices the deployment occupies.
func (d Deployment) GPUs() int {
	if d.Mode == ModeUnified {
		return d.Unified.GPUs()
	}
	return d.Prefill.GPUs() + d.Decode.GPUs()
}

// String is a short name: "unified 4×TP2" or "prefill 1×TP2 + decode 1×TP4".
func (d Deployment) String() string {
	if d.Mode == ModeUnified {
		return fmt.Sprintf("unified %d×TP%d", d.Unified.Groups, d.Unified.TP)
	}
	return fmt.Sprintf("prefill %d×TP%d + decode %d×TP%d", d.Prefill.Groups, d.Prefill.TP, d.Decode.Groups, d.Decode.TP)
}

func (d Deployment) validate() error {
	var pools []Pool
	switch d.Mode {
	case ModeUnified:
		pools = []Pool{d.Unified}
	case ModeDisaggregated:
		pools = []Pool{d.Prefill, d.Decode}
	default:
		return fmt.Errorf("%w: mode %q is neither unified nor disaggregated", ErrInvalidDeployment, d.Mode)
	}
	for _, p := range pools {
		if p.Groups < 1 || p.TP < 1 {
			return fmt.Errorf("%w: %s needs at least one group of TP at least 1", ErrInvalidDeployment, d)
		}
	}
	return nil
}
