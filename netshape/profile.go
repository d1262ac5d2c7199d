package netshape

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// A Profile is a named kind of link between two machines.
type Profile struct {
	// Name is what --link takes.
	Name string
	// Rate is each node's bandwidth in bits per second, each way at once
	// (a full-duplex port into a non-blocking switch); 0: not shaped.
	Rate int64
	// Latency is what the fabric adds one way between two hosts' network
	// stacks: two adapters and one switch hop. The kernel's TCP stack on
	// both ends costs its own time on top, here as on real machines.
	// It is added with netem where the kernel has it (see the package
	// doc).
	Latency time.Duration
	// Fabric says what the profile stands for and where its figures come
	// from.
	Fabric string
}

// BytesPerSecond is Rate in bytes per second.
func (p Profile) BytesPerSecond() float64 { return float64(p.Rate) / 8 }

// Shaped reports whether the profile limits the rate.
func (p Profile) Shaped() bool { return p.Rate > 0 }

// Burst is how many bytes a shaped link passes at once after it was idle,
// beyond its rate: the token bucket's size, 100 µs at the rate and at
// least 256 KiB (four of the largest GSO packets, which must fit whole).
// A real port has none, so a transfer that starts after an idle spell
// can beat bytes ÷ rate by up to Burst ÷ rate (100 µs, or 210 µs at 10
// Gb/s) per idle spell. 0 when not shaped.
func (p Profile) Burst() int64 {
	if !p.Shaped() {
		return 0
	}
	return burst(p.Rate)
}

func burst(rate int64) int64 { return max(256<<10, int64(float64(rate)/8*100e-6)) }

// RateString is Rate for people: "25 Gb/s", or "unshaped".
func (p Profile) RateString() string {
	if !p.Shaped() {
		return "unshaped"
	}
	return fmt.Sprintf("%g Gb/s", float64(p.Rate)/1e9)
}

// ErrUnknownProfile is returned by Lookup for a name no profile has.
var ErrUnknownProfile = errors.New("unknown link profile")

// The figures are public ones:
//   - NVLink 4 (H100 SXM5): 900 GB/s per GPU over all its links, so 450
//     GB/s each way (NVIDIA H100 Tensor Core GPU datasheet). Not shaped:
//     no veth comes near it, so the machine's own limit applies.
//   - InfiniBand NDR 400 Gb/s and HDR 200 Gb/s per port (NVIDIA ConnectX-7
//     and ConnectX-6 VPI user manuals). NVIDIA states "sub-600ns latency"
//     for the ConnectX-6 VPI adapters; with one cut-through switch hop (a
//     few hundred ns port to port on Quantum switches) that is about 1 µs
//     host to host, the usual small-message MPI figure on HDR and NDR.
//   - Ethernet 100, 25 and 10 Gb/s (IEEE 802.3ba/bj, 802.3by, 802.3ae).
//     NVIDIA states "sub 0.8usec latency" for ConnectX-6 EN; two adapters
//     and a store-and-forward switch hop (a 1500-byte frame is 0.12 µs
//     on the wire at 100 Gb/s, 0.48 µs at 25 Gb/s, 1.2 µs at 10 Gb/s)
//     come to about 2, 2 and 3 µs.
var profiles = []Profile{
	{Name: "nvlink", Rate: 0, Latency: 0, Fabric: "NVLink 4 (H100 SXM5: 450 GB/s each way); not shaped, the machine's own limit applies"},
	{Name: "ib-400g", Rate: 400e9, Latency: time.Microsecond, Fabric: "InfiniBand NDR, ConnectX-7: 400 Gb/s per port; ~1 µs (adapters < 0.6 µs, one switch hop)"},
	{Name: "ib-200g", Rate: 200e9, Latency: time.Microsecond, Fabric: "InfiniBand HDR, ConnectX-6: 200 Gb/s per port; ~1 µs (adapters < 0.6 µs, one switch hop)"},
	{Name: "eth-100g", Rate: 100e9, Latency: 2 * time.Microsecond, Fabric: "100 GbE (802.3ba): ~2 µs (adapters < 0.8 µs, one switch hop)"},
	{Name: "eth-25g", Rate: 25e9, Latency: 2 * time.Microsecond, Fabric: "25 GbE (802.3by): ~2 µs (adapters < 0.8 µs, one store-and-forward hop)"},
	{Name: "eth-10g", Rate: 10e9, Latency: 3 * time.Microsecond, Fabric: "10 GbE (802.3ae): ~3 µs (adapters < 0.8 µs, one store-and-forward hop)"},
}

// Profiles lists the profiles, fastest first.
func Profiles() []Profile { return append([]Profile(nil), profiles...) }

// Names lists the profiles' names, fastest first.
func Names() []string {
	names := make([]string, len(profiles))
	for i, p := range profiles {
		names[i] = p.Name
	}
	return names
}

// Lookup returns the profile called name.
func Lookup(name string) (Profile, error) {
	for _, p := range profiles {
		if p.Name == name {
			return p, nil
		}
	}
	return Profile{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownProfile, name, strings.Join(Names(), ", "))
}
