//go:build !linux

package netshape

const onLinux = false

// Do needs Linux; New never returns a Network elsewhere.
func (n *Network) Do(int, func() error) error { return ErrUnsupported }
