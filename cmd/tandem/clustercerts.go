package main

import (
	"errors"
	"fmt"

	"github.com/tandemllm/tandem/internal/scratch"
	"github.com/tandemllm/tandem/pki"
	"github.com/tandemllm/tandem/worker/supervisor"
)

// clusterCerts are the certificates a process starting a whole cluster
// (`tandem up`) gives the processes it starts: one per process from a
// throwaway CA made in a directory of its own, removed by close; or, when
// the user gave --internal-*, those files for every process.
type clusterCerts struct {
	dir   *scratch.Dir // the throwaway CA's directory; nil with given files
	ca    *pki.CA
	given internalFlags
}

// pkiScratch prefixes the throwaway CAs' directories.
const pkiScratch = "tandem-pki-"

// newClusterCerts makes a throwaway CA, or takes the files of f when
// they are given.
func newClusterCerts(f *internalFlags) (*clusterCerts, error) {
	if f.ca != "" || f.cert != "" || f.key != "" {
		if _, err := f.load(); err != nil { // every flag there and the files loading
			return nil, err
		}
		return &clusterCerts{given: *f}, nil
	}
	dir, err := scratch.New(pkiScratch, scratch.Options{})
	if err != nil {
		return nil, err
	}
	ca, err := pki.Init(dir.Path(), nil, nil, 0)
	if err != nil {
		dir.Close()
		return nil, err
	}
	return &clusterCerts{dir: dir, ca: ca}, nil
}

// issue returns the files of process name.
func (c *clusterCerts) issue(name string) (internalFlags, error) {
	if c.ca == nil {
		return c.given, nil
	}
	files, err := c.ca.IssueFiles(c.dir.Path(), name, nil, 0)
	if err != nil {
		return internalFlags{}, fmt.Errorf("a certificate for %s: %w", name, err)
	}
	return internalFlags{ca: files.CA, cert: files.Cert, key: files.Key}, nil
}

// close removes the throwaway CA and its certificates.
func (c *clusterCerts) close() {
	if c != nil && c.dir != nil {
		c.dir.Close()
	}
}

// withCerts gives rank r of g the certificate c issues as NAME-r, so that
// every worker process holds a certificate of its own.
func (c *clusterCerts) withCerts(g *supervisor.Group) error {
	perRank := make(map[int][]string, len(g.Ranks))
	for _, r := range g.Ranks {
		f, err := c.issue(fmt.Sprintf("%s-%d", g.Name, r))
		if err != nil {
			return err
		}
		perRank[r] = f.args()
	}
	args := g.Args
	g.Args = func(rank, inc int) []string {
		return append(args(rank, inc), perRank[rank]...)
	}
	return nil
}

// errInternalTLSOff is the conflict of --internal-tls=false with files.
var errInternalTLSOff = errors.New("--internal-tls=false with --internal-ca/--internal-cert/--internal-key: give one or the other")
