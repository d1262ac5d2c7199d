package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/pki"
)

func newCertsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make the certificates of a cluster's internal mutual TLS",
		Long: `Every connection inside a Tandem cluster (worker gRPC, the raw KV data plane,
the TCP ring, etcd) is mutual TLS against the cluster's own CA: a process is a
member when its certificate chains to that CA. "tandem certs init" makes such a
CA and a certificate per process kind; give each process --internal-ca,
--internal-cert and --internal-key. "tandem up" does this by itself in its run
directory. See docs/security.md.`,
	}
	cmd.AddCommand(newCertsInitCmd(), newCertsIssueCmd())
	return cmd
}

// certsFlags are the options both subcommands share.
type certsFlags struct {
	hosts []string
	days  int
}

func (f *certsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringSliceVar(&f.hosts, "hosts", nil, "extra DNS names and IP addresses in each certificate (host names are not checked inside the cluster; these serve other clients, such as etcdctl)")
	fl.IntVar(&f.days, "days", 365, "validity of the certificates, in days")
}

func (f *certsFlags) validity() (time.Duration, error) {
	if f.days < 1 {
		return 0, fmt.Errorf("--days %d: must be >= 1", f.days)
	}
	return time.Duration(f.days) * 24 * time.Hour, nil
}

func newCertsInitCmd() *cobra.Command {
	var (
		f     certsFlags
		out   string
		names []string
	)
	cmd := &cobra.Command{
		Use:   "init --out DIR",
		Short: "Make a cluster CA and a certificate for each process kind",
		Example: `  tandem certs init --out ./tandem-pki
  kubectl create secret generic tandem-internal-tls \
    --from-file=ca.crt=tandem-pki/ca.crt \
    --from-file=tls.crt=tandem-pki/node.crt --from-file=tls.key=tandem-pki/node.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			validFor, err := f.validity()
			if err != nil {
				return err
			}
			for _, n := range names {
				if n == "" || n == "ca" || strings.ContainsAny(n, `/\`) {
					return fmt.Errorf("--names: %q is not a file name this command may write", n)
				}
			}
			if _, err := pki.Init(out, names, f.hosts, validFor); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "CA          %s (its key %s: keep it off the cluster)\n", filepath.Join(out, pki.CACertFile), filepath.Join(out, pki.CAKeyFile))
			for _, n := range names {
				fmt.Fprintf(w, "%-11s %s, %s\n", n, filepath.Join(out, n+".crt"), filepath.Join(out, n+".key"))
			}
			fmt.Fprintf(w, "each process: --internal-ca %s --internal-cert DIR/NAME.crt --internal-key DIR/NAME.key\n", filepath.Join(out, pki.CACertFile))
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&out, "out", "", "directory to write (created; existing certificate files are never overwritten)")
	cmd.Flags().StringSliceVar(&names, "names", []string{"node"}, "certificates to issue: NAME.crt and NAME.key each (one shared by every process, or one per process kind: coordinator,worker,etcd)")
	return cmd
}

func newCertsIssueCmd() *cobra.Command {
	var (
		f   certsFlags
		dir string
	)
	cmd := &cobra.Command{
		Use:   "issue --dir DIR NAME...",
		Short: "Issue more certificates from the CA that init made in DIR",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return errors.New("--dir is required: the directory holding ca.crt and ca.key")
			}
			validFor, err := f.validity()
			if err != nil {
				return err
			}
			ca, err := pki.LoadCA(filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			if err != nil {
				return err
			}
			for _, n := range args {
				if n == "ca" || strings.ContainsAny(n, `/\`) {
					return fmt.Errorf("%q is not a file name this command may write", n)
				}
				files, err := ca.IssueFiles(dir, n, f.hosts, validFor)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%-11s %s, %s\n", n, files.Cert, files.Key)
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&dir, "dir", "", "directory holding the CA (ca.crt, ca.key); the certificates are written there")
	return cmd
}
