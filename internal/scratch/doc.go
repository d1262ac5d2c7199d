// Package scratch makes temporary directories that a later process can
// tell from live ones and remove after their owner was killed.
//
// os.MkdirTemp's directories are removed by their owner's deferred
// cleanup, which never runs when the process is killed with SIGKILL (an
// OOM kill, a test timing out, a fault test killing a parent); an embedded
// etcd's directory holds about 128 MB of preallocated WAL, so a few
// hundred kills fill a disk. A scratch directory holds an owner file on
// which its process keeps an exclusive flock(2) lock; the kernel drops
// the lock when the process dies, however it dies. New first removes the
// directories of its prefix whose lock it can take (their owner is gone),
// then makes its own. The directory is created under a hidden name,
// locked, and renamed into place, so no reaper ever sees it unlocked.
//
// Where flock(2) is missing (not unix), New makes a plain temporary
// directory and reaps nothing.
package scratch
