package netshape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrUnsupported means this process cannot build a network: it is not
// root, iproute2 is missing, or the system is not Linux.
var ErrUnsupported = errors.New("network namespaces unavailable")

// Check reports whether this process can build a network.
func Check() error {
	var problems []string
	if !onLinux {
		problems = append(problems, "network namespaces need Linux")
	}
	if uid := os.Geteuid(); uid != 0 {
		problems = append(problems, fmt.Sprintf("not running as root (uid %d)", uid))
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			problems = append(problems, fmt.Sprintf("no %q on PATH (install iproute2)", tool))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: needs root and iproute2 (ip, tc): %s", ErrUnsupported, strings.Join(problems, "; "))
	}
	return nil
}

// LockDir holds a lock file per live network, and the lock of subnet
// choice. It is one for the whole machine: a lock only says a network is
// alive to whoever looks in the same place (a sweep looking elsewhere
// would remove live networks).
const LockDir = "/run/tandem-netshape"

// maxNodes is how many nodes fit a /24 beside the host's address.
const maxNodes = 250

// Options configure New.
type Options struct {
	// Nodes is the number of namespaces, one per process: 1 to 250.
	Nodes int
	// Profile shapes every node's link.
	Profile Profile
	// Reaper, when set, is the command line of a process that removes the
	// network if this process dies without Close (a kill -9 included):
	// New starts it with one more argument, the network's prefix, and a
	// pipe on its stdin that ends when this process does;
	// it should call Reap with it. Without one, a network whose process
	// was killed is removed by the next New or Sweep.
	Reaper []string
	// ReaperStderr receives the reaper's output (default: none). It is a
	// file, not any writer: the reaper outlives this process, and a pipe
	// to a goroutine of it would break when it dies.
	ReaperStderr *os.File
	// run runs one ip or tc command line (default: runCommand); tests
	// replace it to fail a chosen step.
	run runner
}

// runner runs a command line and returns its standard output.
type runner func(ctx context.Context, argv ...string) (string, error)

// runCommand runs argv; its error carries the command's stderr.
func runCommand(ctx context.Context, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// A Node is one namespace of a network.
type Node struct {
	// Namespace is its name for `ip netns`.
	Namespace string
	// Addr is its IPv4 address on the bridge.
	Addr string
}

// A Network is a bridge in this network namespace and one namespace per
// node, each joined to the bridge by a veth pair whose two ends are
// shaped to the profile. Close removes all of it.
type Network struct {
	profile Profile
	prefix  string
	host    netip.Addr
	nodes   []Node
	run     runner
	lock    *fileLock

	netem       bool          // the profile's latency is added
	netemErr    string        // why it is not, when the profile has one
	pathLatency time.Duration // one way between two nodes, measured by New

	guard      *os.File // write end of the reaper's stdin
	reaper     *exec.Cmd
	reaperDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// New builds a network. It first removes what dead processes left (see
// Sweep); on any error it removes what it made.
func New(ctx context.Context, opts Options) (*Network, error) {
	if opts.Nodes < 1 || opts.Nodes > maxNodes {
		return nil, fmt.Errorf("netshape: %d nodes: must be 1 to %d", opts.Nodes, maxNodes)
	}
	if opts.Profile.Rate < 0 || opts.Profile.Latency < 0 {
		return nil, fmt.Errorf("netshape: profile %q: negative rate or latency", opts.Profile.Name)
	}
	if opts.run == nil {
		opts.run = runCommand
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("netshape: %w", err)
	}
	if err := sweep(ctx, opts.run); err != nil {
		return nil, err
	}
	prefix, lock, err := claimPrefix(ctx, opts.run)
	if err != nil {
		return nil, err
	}
	n := &Network{profile: opts.Profile, prefix: prefix, run: opts.run, lock: lock}
	if err := n.startReaper(opts.Reaper, opts.ReaperStderr); err != nil {
		lock.release()
		return nil, err
	}
	if err := n.build(ctx, opts.Nodes); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

// claimPrefix picks a name prefix no live network holds: "tdm", this
// process's id and a letter, locked for the network's lifetime. A prefix
// whose lock is free may still name what a dead process with the same id
// left: that is removed first.
func claimPrefix(ctx context.Context, run runner) (string, *fileLock, error) {
	pid := strconv.Itoa(os.Getpid())
	for c := 'a'; c <= 'z'; c++ {
		prefix := namePrefix + pid + string(c)
		l, err := lockPath(lockFile(prefix), false)
		if errors.Is(err, errBusy) {
			continue
		}
		if err != nil {
			return "", nil, fmt.Errorf("netshape: %w", err)
		}
		if err := remove(ctx, run, prefix); err != nil {
			l.release()
			return "", nil, err
		}
		return prefix, l, nil
	}
	return "", nil, fmt.Errorf("netshape: this process already holds 26 networks")
}

// build makes the bridge and the nodes, shapes them and checks that two
// nodes reach each other (measuring the path's own latency).
func (n *Network) build(ctx context.Context, nodes int) error {
	if err := n.makeBridge(ctx); err != nil {
		return err
	}
	n.nodes = make([]Node, nodes)
	for i := range n.nodes {
		if err := n.makeNode(ctx, i); err != nil {
			return err
		}
	}
	if err := n.shape(ctx); err != nil {
		return err
	}
	lat, err := n.probe(ctx)
	if err != nil {
		return fmt.Errorf("netshape: the namespaces do not reach each other over bridge %s (a firewall on bridged "+
			"traffic, such as br_netfilter with an iptables FORWARD policy of DROP as Docker sets, would do this): %w", n.bridge(), err)
	}
	n.pathLatency = lat
	return nil
}

// mtu is the links' MTU: the largest a veth takes, so that the emulator's
// per-packet cost stays below the rates it shapes to. tbf counts bytes, so
// the shaped rate does not depend on it.
const mtu = "65535"

func (n *Network) makeBridge(ctx context.Context) error {
	// One process at a time picks a subnet and claims it with the
	// bridge's address, so that two starts never pick the same.
	l, err := lockPath(filepath.Join(LockDir, "subnets.lock"), true)
	if err != nil {
		return fmt.Errorf("netshape: %w", err)
	}
	defer l.close()
	subnet, err := freeSubnet(ctx, n.run)
	if err != nil {
		return err
	}
	n.host = subnet.Addr().Next()
	br := n.bridge()
	return n.runAll(ctx,
		[]string{"ip", "link", "add", br, "mtu", mtu, "type", "bridge"},
		[]string{"ip", "addr", "add", netip.PrefixFrom(n.host, subnet.Bits()).String(), "dev", br},
		[]string{"ip", "link", "set", br, "up"},
	)
}

func (n *Network) makeNode(ctx context.Context, i int) error {
	ns, hv := n.namespace(i), n.hostVeth(i)
	addr := n.host
	for range i + 1 {
		addr = addr.Next()
	}
	n.nodes[i] = Node{Namespace: ns, Addr: addr.String()}
	return n.runAll(ctx,
		[]string{"ip", "netns", "add", ns},
		[]string{"ip", "link", "add", hv, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu, "netns", ns},
		[]string{"ip", "link", "set", hv, "master", n.bridge(), "up"},
		[]string{"ip", "-n", ns, "addr", "add", addr.String() + "/24", "dev", "eth0"},
		[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
		[]string{"ip", "-n", ns, "route", "add", "default", "via", n.host.String()},
	)
}

// shape puts the profile on both ends of every node's veth pair: the
// namespace's end limits what the node sends, the bridge's end what it
// receives. The latency goes on the namespace's end only, so that it is
// added once each way.
func (n *Network) shape(ctx context.Context) error {
	p := n.profile
	if p.Latency > 0 {
		delay := []string{"tc", "-n", n.nodes[0].Namespace, "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "netem", "delay", usec(p.Latency)}
		if _, err := n.run(ctx, delay...); err != nil {
			n.netemErr = "tc says: " + lastPart(err.Error())
		} else {
			n.netem = true
		}
	}
	for i, node := range n.nodes {
		nsQdisc := []string{"tc", "-n", node.Namespace, "qdisc", "add", "dev", "eth0"}
		var cmds [][]string
		if n.netem && i > 0 {
			cmds = append(cmds, append(nsQdisc, "root", "handle", "1:", "netem", "delay", usec(p.Latency)))
		}
		if p.Shaped() {
			if n.netem {
				cmds = append(cmds, append(append(nsQdisc, "parent", "1:1", "handle", "10:"), tbf(p.Rate)...))
			} else {
				cmds = append(cmds, append(append(nsQdisc, "root"), tbf(p.Rate)...))
			}
			cmds = append(cmds, append([]string{"tc", "qdisc", "add", "dev", n.hostVeth(i), "root"}, tbf(p.Rate)...))
		}
		if err := n.runAll(ctx, cmds...); err != nil {
			return err
		}
	}
	return nil
}

// tbf is a token bucket for rate bits/s (burst: Profile.Burst) with a
// queue of 2 ms (at least 4 MiB), about what a switch port buffers.
func tbf(rate int64) []string {
	limit := max(4<<20, int64(float64(rate)/8*2e-3))
	return []string{"tbf", "rate", strconv.FormatInt(rate, 10) + "bit", "burst", strconv.FormatInt(burst(rate), 10), "limit", strconv.FormatInt(limit, 10)}
}

func usec(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) + "us" }

// lastPart is what follows the last ": " of an error: the command's own
// words.
func lastPart(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func (n *Network) runAll(ctx context.Context, cmds ...[]string) error {
	for _, c := range cmds {
		if _, err := n.run(ctx, c...); err != nil {
			return fmt.Errorf("netshape: %w", err)
		}
	}
	return nil
}

// freeSubnet picks a /24 in 10.213.0.0/16 that no address or route of
// this namespace overlaps, starting at one chosen by the process id.
func freeSubnet(ctx context.Context, run runner) (netip.Prefix, error) {
	addrs, err := run(ctx, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("netshape: %w", err)
	}
	routes, err := run(ctx, "ip", "-4", "route", "show")
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("netshape: %w", err)
	}
	var taken []netip.Prefix
	for _, line := range strings.Split(addrs, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[2] == "inet" {
			if p, err := netip.ParsePrefix(f[3]); err == nil {
				taken = append(taken, p.Masked())
			}
		}
	}
	for _, line := range strings.Split(routes, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		if p, err := netip.ParsePrefix(f[0]); err == nil {
			taken = append(taken, p.Masked())
		} else if a, err := netip.ParseAddr(f[0]); err == nil {
			taken = append(taken, netip.PrefixFrom(a, 32))
		}
	}
	start := os.Getpid()
	for k := range 256 {
		c := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(start + k), 0}), 24)
		free := true
		for _, t := range taken {
			if t.Overlaps(c) {
				free = false
				break
			}
		}
		if free {
			return c, nil
		}
	}
	return netip.Prefix{}, errors.New("netshape: no free /24 left in 10.213.0.0/16")
}

// Nodes lists the network's nodes.
func (n *Network) Nodes() []Node { return append([]Node(nil), n.nodes...) }

// Node returns node i.
func (n *Network) Node(i int) Node { return n.nodes[i] }

// HostAddr is this namespace's address on the bridge: what the nodes dial
// to reach servers of this process (listen on it).
func (n *Network) HostAddr() string { return n.host.String() }

// Prefix is the prefix of every name the network uses.
func (n *Network) Prefix() string { return n.prefix }

// Profile is the network's profile.
func (n *Network) Profile() Profile { return n.profile }

// PathLatency is the one-way latency between two nodes that New measured
// before adding any (TCP ping-pong of 32 bytes, median of 200).
func (n *Network) PathLatency() time.Duration { return n.pathLatency }

// LatencyAdded reports whether the profile's latency is added (netem);
// when it is not, why says why.
func (n *Network) LatencyAdded() (added bool, why string) {
	switch {
	case n.netem:
		return true, ""
	case n.profile.Latency == 0:
		return false, "the profile has none"
	}
	return false, "this kernel has no netem (" + n.netemErr + ")"
}

// Command returns argv run inside node i's namespace (through `ip netns
// exec`, which execs argv in place: its process id and parent are the
// command's own).
func (n *Network) Command(i int, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.nodes[i].Namespace}, argv...)
}

// Describe says in a few lines what the network is and what it does to
// the traffic, latency included.
func (n *Network) Describe() []string {
	p := n.profile
	lines := []string{fmt.Sprintf("link %s: %d network namespaces %sn0..%d on bridge %s (%s/24)",
		p.Name, len(n.nodes), n.prefix, len(n.nodes)-1, n.bridge(), n.host.Prev())}
	if p.Shaped() {
		lines = append(lines, fmt.Sprintf("link %s: each node's link is shaped to %s each way (tbf on both ends of its veth pair)", p.Name, p.RateString()))
	} else {
		lines = append(lines, fmt.Sprintf("link %s: not shaped: the machine's own veth and TCP limits apply", p.Name))
	}
	measured := fmt.Sprintf("the path between two namespaces costs %.1f µs one way by itself (TCP ping-pong, median)", float64(n.pathLatency)/1e3)
	switch added, why := n.LatencyAdded(); {
	case added:
		lines = append(lines, fmt.Sprintf("link %s: %v of fabric latency added one way (netem); %s", p.Name, p.Latency, measured))
	case p.Latency > 0:
		lines = append(lines, fmt.Sprintf("link %s: its %v of fabric latency is NOT added: %s; %s", p.Name, p.Latency, why, measured))
	default:
		lines = append(lines, fmt.Sprintf("link %s: %s", p.Name, measured))
	}
	return lines
}

// Close stops the processes left in the namespaces and removes every
// namespace, link and qdisc of the network, then ends its reaper.
func (n *Network) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := remove(ctx, n.run, n.prefix)
		n.lock.release()
		n.closeErr = errors.Join(err, n.stopReaper(err == nil))
	})
	return n.closeErr
}

func (n *Network) bridge() string         { return n.prefix + "b" }
func (n *Network) hostVeth(i int) string  { return n.prefix + "h" + strconv.Itoa(i) }
func (n *Network) namespace(i int) string { return n.prefix + "n" + strconv.Itoa(i) }
