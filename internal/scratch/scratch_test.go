//go:build unix

package scratch

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// childEnv makes the test binary a process that makes one scratch
// directory, prints its path and waits for its stdin to close.
const childEnv = "SCRATCH_TEST_CHILD"

func TestMain(m *testing.M) {
	if prefix := os.Getenv(childEnv); prefix != "" {
		d, err := New(prefix, Options{})
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(2)
		}
		os.Stdout.WriteString(d.Path() + "\n")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		d.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// owner is a child process holding a scratch directory.
type owner struct {
	cmd   *exec.Cmd
	stdin io.Closer // closing it ends the owner normally
	path  string
}

func startOwner(t *testing.T, tmp, prefix string) *owner {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+prefix, "TMPDIR="+tmp)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("the owner printed no path: %v", err)
	}
	return &owner{cmd: cmd, stdin: stdin, path: line[:len(line)-1]}
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// TestReapsKilledOwners: the directory of an owner killed with SIGKILL
// is removed by the next New; a live owner's, another prefix's and a
// directory not made by this package are kept.
func TestReapsKilledOwners(t *testing.T) {
	tmp := t.TempDir()
	killed := startOwner(t, tmp, "tandem-etcd-")
	live := startOwner(t, tmp, "tandem-etcd-")
	otherPrefix := startOwner(t, tmp, "tandem-pki-")
	foreign := filepath.Join(tmp, "tandem-etcd-foreign")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := killed.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = killed.cmd.Wait()
	if !exists(t, killed.path) {
		t.Fatalf("%s went with its owner's kill; the test proves nothing", killed.path)
	}

	d, err := New("tandem-etcd-", Options{Parent: tmp})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		killed.path: false, live.path: true, otherPrefix.path: true, foreign: true, d.Path(): true,
	} {
		if got := exists(t, path); got != want {
			t.Errorf("%s exists: %v, want %v", path, got, want)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(t, d.Path()) {
		t.Errorf("%s left after Close", d.Path())
	}
}

// TestOwnerExitRemoves: an owner that ends normally leaves nothing
// behind.
func TestOwnerExitRemoves(t *testing.T) {
	tmp := t.TempDir()
	o := startOwner(t, tmp, "tandem-etcd-")
	if !exists(t, o.path) {
		t.Fatalf("%s does not exist while its owner runs", o.path)
	}
	o.stdin.Close()
	if err := o.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left in TMPDIR after a normal exit: %v", left)
	}
}

func TestBadPrefix(t *testing.T) {
	for _, prefix := range []string{"", ".hidden-", "a/b-"} {
		if d, err := New(prefix, Options{Parent: t.TempDir()}); err == nil {
			d.Close()
			t.Errorf("New(%q) made %s; want an error", prefix, d.Path())
		}
	}
}

// TestGlobMetacharacters: a prefix with glob metacharacters matches only
// itself.
func TestGlobMetacharacters(t *testing.T) {
	tmp := t.TempDir()
	o := startOwner(t, tmp, "x[a]-")
	other := startOwner(t, tmp, "xa-")
	o.cmd.Process.Kill()
	other.cmd.Process.Kill()
	o.cmd.Wait()
	other.cmd.Wait()
	got := Reap(tmp, "x[a]-")
	if !slices.Equal(got, []string{o.path}) {
		t.Errorf("Reap(x[a]-) = %v, want [%s]", got, o.path)
	}
}
