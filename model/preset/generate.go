package preset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tandemllm/tandem/internal/half"
	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/safetensors"
	"github.com/tandemllm/tandem/model/tokenizer"
)

// ErrExists is wrapped when Write's destination already exists.
var ErrExists = errors.New("destination already exists")

// Options tunes Write and Ensure. The zero value is usable.
type Options struct {
	// DType is the weight dtype; empty means the preset's default.
	DType safetensors.DType
	// Seed selects the random weights; the default is 0.
	Seed uint64
	// Progress, when not nil, receives a line every 10% of the weight
	// data of presets larger than 64 MiB.
	Progress io.Writer
	// MaxShardSize, when positive, shards the weights into files of at
	// most this many bytes plus model.safetensors.index.json; the default
	// is a single model.safetensors.
	MaxShardSize int64
	// Workers generating weights in parallel; 0 means GOMAXPROCS.
	Workers int
	// NoWeights writes config.json and the tokenizer files only: all a
	// process that tokenizes but runs no layer (the coordinator) reads.
	// Such a directory is refused by whatever loads weights from it.
	NoWeights bool
}

// formatVersion names the weight generator in cache paths, so a change
// to the generator never serves stale directories.
const formatVersion = "v1"

// stdDev of matrices and embeddings; uniform on [-a, a] has a std of a/√3.
const stdDev = 0.02

// chunkElems is the unit of parallel generation. It is fixed so the
// bytes do not depend on the number of workers.
const chunkElems = 1 << 18

// Write makes the model directory dir for the named preset. dir must not
// exist; it is built under a temporary name beside it and renamed into
// place when complete.
func Write(ctx context.Context, name, dir string, opts Options) error {
	p, err := Get(name)
	if err != nil {
		return err
	}
	if opts.DType == "" {
		opts.DType = p.DefaultDType
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s: %w", dir, ErrExists)
	}
	cfg, err := p.Config()
	if err != nil {
		return err
	}
	tok, err := tokenizer.GPT2JSON(cfg.VocabSize)
	if err != nil {
		return fmt.Errorf("preset %s: tokenizer: %w", name, err)
	}
	files, err := p.sideFiles(opts.DType, tok)
	if err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-*")
	if err != nil {
		return err
	}
	if err := fill(ctx, p, cfg, tmp, files, opts); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return errors.Join(err, os.RemoveAll(tmp))
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil {
			return fmt.Errorf("%s: %w", dir, ErrExists)
		}
		return err
	}
	return nil
}

func fill(ctx context.Context, p Preset, cfg *model.Config, dir string, files map[string][]byte, opts Options) error {
	for fname, data := range files {
		if err := os.WriteFile(filepath.Join(dir, fname), data, 0o644); err != nil {
			return err
		}
	}
	if opts.NoWeights {
		return nil
	}
	var specs []safetensors.Spec
	kinds := map[string]model.TensorKind{}
	for _, t := range cfg.Tensors() {
		specs = append(specs, safetensors.Spec{Name: t.Name, DType: opts.DType, Shape: t.Shape})
		kinds[t.Name] = t.Kind
	}
	g := &generator{seed: opts.Seed, workers: opts.Workers, kinds: kinds, name: p.Name}
	if g.workers <= 0 {
		g.workers = runtime.GOMAXPROCS(0)
	}
	if total := p.DataSize(opts.DType); opts.Progress != nil && total > 64<<20 {
		g.progress, g.total = opts.Progress, total
	}
	return safetensors.WriteDir(ctx, dir, specs, safetensors.WriteOptions{MaxShardSize: opts.MaxShardSize}, g.tensor)
}

// generator produces every tensor's bytes, chunks in parallel.
type generator struct {
	seed     uint64
	workers  int
	kinds    map[string]model.TensorKind
	name     string
	progress io.Writer
	total    int64
	done     atomic.Int64
	mu       sync.Mutex // serialises progress lines
	reported int64      // tenths of total already reported, under mu
}

func (g *generator) tensor(ctx context.Context, spec safetensors.Spec, dst *safetensors.Sink) error {
	size := int64(spec.DType.Size())
	elems := dst.Size() / size
	chunks := (elems + chunkElems - 1) / chunkElems
	key := tensorKey(g.seed, spec.Name)
	kind := g.kinds[spec.Name]
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, min(int64(g.workers), chunks))
	for w := range errs {
		wg.Go(func() {
			buf := make([]byte, chunkElems*size)
			vals := make([]float32, chunkElems)
			for c := next.Add(1) - 1; c < chunks; c = next.Add(1) - 1 {
				if err := ctx.Err(); err != nil {
					errs[w] = err
					return
				}
				n := min(chunkElems, elems-c*chunkElems)
				values(vals[:n], kind, key, uint64(c))
				b := encode(buf[:n*size], vals[:n], spec.DType)
				if _, err := dst.WriteAt(b, c*chunkElems*size); err != nil {
					errs[w] = err
					return
				}
				g.advance(int64(len(b)))
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (g *generator) advance(n int64) {
	if g.progress == nil {
		return
	}
	done := g.done.Add(n)
	tenths := done * 10 / g.total
	g.mu.Lock()
	defer g.mu.Unlock()
	if tenths > g.reported {
		g.reported = tenths
		fmt.Fprintf(g.progress, "preset %s: %d%% of %.2f GB written\n", g.name, tenths*10, float64(g.total)/1e9)
	}
}

// tensorKey mixes the seed and the tensor name into a generator key.
func tensorKey(seed uint64, name string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(name))
	return h.Sum64()
}

// splitmix64 is a fast, well-mixed counter-based generator: value i of a
// stream is a function of (key, i) alone, so chunks are independent.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// values fills out with chunk c of a tensor of the given kind.
func values(out []float32, kind model.TensorKind, key, c uint64) {
	switch kind {
	case model.KindNorm:
		for i := range out {
			out[i] = 1
		}
		return
	case model.KindBias:
		clear(out)
		return
	}
	const a = stdDev * 1.7320508075688772 // √3
	const scale = 2 * a / (1 << 24)
	base := splitmix64(key ^ c*0xd1b54a32d192ed03)
	for i := 0; i < len(out); i += 2 {
		r := splitmix64(base + uint64(i))
		out[i] = float32(r>>40)*scale - a
		if i+1 < len(out) {
			out[i+1] = float32(r>>8&(1<<24-1))*scale - a
		}
	}
}

// encode writes vals into buf as little-endian dtype values.
func encode(buf []byte, vals []float32, dtype safetensors.DType) []byte {
	switch dtype {
	case safetensors.BF16:
		half.BF16FromFloat32s(buf, vals)
	case safetensors.F16:
		half.F16FromFloat32s(buf, vals)
	default:
		for i, v := range vals {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
	}
	return buf
}

// DefaultCacheDir is where Ensure keeps preset directories by default:
// $TANDEM_CACHE/models when TANDEM_CACHE is set, otherwise tandem/models
// under the user's cache directory, or under the temporary directory
// when the user has none (no $HOME).
func DefaultCacheDir() string {
	if d := os.Getenv("TANDEM_CACHE"); d != "" {
		return filepath.Join(d, "models")
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "tandem", "models")
}

// CachePath is the directory Ensure uses for a preset, dtype and seed.
func CachePath(cacheDir, name string, opts Options) (string, error) {
	p, err := Get(name)
	if err != nil {
		return "", err
	}
	dt := opts.DType
	if dt == "" {
		dt = p.DefaultDType
	}
	if _, err := torchDType(dt); err != nil {
		return "", err
	}
	return filepath.Join(cacheDir, fmt.Sprintf("%s-%s-seed%d-%s", name, dt, opts.Seed, formatVersion)), nil
}

// Ensure returns the cached model directory for (preset, dtype, seed),
// making it on first use. Directories appear atomically, so concurrent
// callers, in this process or others, at worst generate the same bytes
// twice; the first rename wins and the others use its result.
func Ensure(ctx context.Context, name, cacheDir string, opts Options) (string, error) {
	dir, err := CachePath(cacheDir, name, opts)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	err = Write(ctx, name, dir, opts)
	if errors.Is(err, ErrExists) {
		// Another caller won the race, or something else occupies dir.
		if _, serr := os.Stat(filepath.Join(dir, "config.json")); serr != nil {
			return "", fmt.Errorf("%s exists but is not a complete model directory: %w", dir, serr)
		}
		return dir, nil
	}
	if err != nil {
		return "", err
	}
	return dir, nil
}
