package cpuquota

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
)

// CPUs returns how many CPUs this process may keep busy: runtime.NumCPU
// (the CPUs it may run on), or its cgroup's CPU limit rounded up when
// that is lower; at least 1. A cgroup that cannot be read limits nothing.
func CPUs() int {
	limit, _ := Limit(os.DirFS("/"))
	return cpus(runtime.NumCPU(), limit)
}

func cpus(online int, limit float64) int {
	n := online
	if limit > 0 && limit < float64(n) {
		n = int(math.Ceil(limit))
	}
	return max(n, 1)
}

// Limit reads the CPU bandwidth limit, in CPUs, of the cgroup of the
// process whose /proc/self and /sys/fs/cgroup lie in root (a file system
// rooted where / is; tests give a directory of fixtures): quota over
// period of its own cgroup and each ancestor's under the mount, the
// smallest. 0 means no limit. Where a cgroup v1 hierarchy holds the cpu
// controller it is read; else the unified (v2) hierarchy.
func Limit(root fs.FS) (float64, error) {
	cg, err := readCgroups(root)
	if err != nil {
		return 0, err
	}
	mounts, err := readMounts(root)
	if err != nil {
		return 0, err
	}
	v1, inV1 := cg["cpu"]
	for _, m := range mounts {
		switch {
		case inV1 && m.fsType == "cgroup" && m.has("cpu"):
			return walk(root, m.under(v1), m.point, readV1)
		case !inV1 && m.fsType == "cgroup2":
			if v2, ok := cg[""]; ok {
				return walk(root, m.under(v2), m.point, readV2)
			}
		}
	}
	return 0, nil // no cgroup file system holding this process's CPU controller
}

// walk reads the limit of dir and each parent up to the mount point.
func walk(root fs.FS, dir, top string, read func(fs.FS, string) (float64, error)) (float64, error) {
	limit := 0.0
	for {
		l, err := read(root, dir)
		if err != nil {
			return 0, err
		}
		if l > 0 && (limit == 0 || l < limit) {
			limit = l
		}
		if dir == top || !strings.HasPrefix(dir, top+"/") {
			return limit, nil
		}
		dir = path.Dir(dir)
	}
}

// readV2 reads cpu.max ("max 100000" or "150000 100000"); a cgroup
// without the file (the root, or the cpu controller not enabled) limits
// nothing.
func readV2(root fs.FS, dir string) (float64, error) {
	b, err := fs.ReadFile(root, path.Join(dir, "cpu.max"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	quota, period, ok := strings.Cut(strings.TrimSpace(string(b)), " ")
	if !ok {
		return 0, fmt.Errorf("cpuquota: /%s/cpu.max: %q is not QUOTA PERIOD", dir, strings.TrimSpace(string(b)))
	}
	if quota == "max" {
		return 0, nil
	}
	return ratio("/"+dir+"/cpu.max", quota, period)
}

// readV1 reads cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
func readV1(root fs.FS, dir string) (float64, error) {
	q, err := fs.ReadFile(root, path.Join(dir, "cpu.cfs_quota_us"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	quota := strings.TrimSpace(string(q))
	if quota == "-1" {
		return 0, nil
	}
	p, err := fs.ReadFile(root, path.Join(dir, "cpu.cfs_period_us"))
	if err != nil {
		return 0, err
	}
	return ratio("/"+dir+"/cpu.cfs_quota_us", quota, strings.TrimSpace(string(p)))
}

func ratio(file, quota, period string) (float64, error) {
	q, err1 := strconv.ParseInt(quota, 10, 64)
	p, err2 := strconv.ParseInt(period, 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, fmt.Errorf("cpuquota: %s: quota %q, period %q are not positive integers", file, quota, period)
	}
	return float64(q) / float64(p), nil
}

// readCgroups reads /proc/self/cgroup: the process's cgroup path by v1
// controller ("" for the unified hierarchy).
func readCgroups(root fs.FS) (map[string]string, error) {
	out := map[string]string{}
	err := eachLine(root, "proc/self/cgroup", func(line string) error {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return fmt.Errorf("cpuquota: /proc/self/cgroup line %q is not ID:CONTROLLERS:PATH", line)
		}
		if f[0] == "0" && f[1] == "" {
			out[""] = f[2]
			return nil
		}
		for _, c := range strings.Split(f[1], ",") {
			out[c] = f[2]
		}
		return nil
	})
	return out, err
}

// mount is a cgroup file system mounted in this process's view.
type mount struct {
	root   string // the cgroup the mount shows at its point
	point  string // where, without the leading /
	fsType string
	opts   []string // super options: a v1 hierarchy's controllers
}

func (m mount) has(opt string) bool {
	for _, o := range m.opts {
		if o == opt {
			return true
		}
	}
	return false
}

// under is where cgroup path cg lies under the mount point; a cgroup
// outside the mount's root (a namespace hiding its ancestors) is the
// mount point itself.
func (m mount) under(cg string) string {
	if m.root == "/" {
		return path.Clean(m.point + cg)
	}
	if rest, ok := strings.CutPrefix(cg, m.root); ok && (rest == "" || rest[0] == '/') {
		return path.Clean(m.point + rest)
	}
	return m.point
}

// readMounts reads the cgroup mounts of /proc/self/mountinfo: "ID PARENT
// MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS".
func readMounts(root fs.FS) ([]mount, error) {
	var out []mount
	err := eachLine(root, "proc/self/mountinfo", func(line string) error {
		f := strings.Fields(line)
		sep := -1
		for i, w := range f {
			if w == "-" {
				sep = i
				break
			}
		}
		if sep < 6 || len(f) < sep+4 {
			return fmt.Errorf("cpuquota: /proc/self/mountinfo line %q is malformed", line)
		}
		if t := f[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, mount{root: unescape(f[3]), point: strings.TrimPrefix(path.Clean(unescape(f[4])), "/"),
				fsType: t, opts: strings.Split(f[sep+3], ",")})
		}
		return nil
	})
	return out, err
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func eachLine(root fs.FS, name string, fn func(string) error) error {
	f, err := root.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			if err := fn(line); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}
