package costmodel

import (
	"bufio"
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/tandemllm/tandem/model"
	"github.com/tandemllm/tandem/model/preset"
	"github.com/tandemllm/tandem/netshape"
)

// unit is an efficiency of 1 everywhere and no overheads, so the tests
// see the formulas' raw arithmetic.
var unit = Efficiency{Memory: 1, Compute: 1, CollectiveBandwidth: 1, CollectiveLatency: 1, Transfer: 1}

func presetShape(t *testing.T, name, kind string) (Shape, *model.Config) {
	t.Helper()
	p, err := preset.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewShape(name, c, kind, DTypes{})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func newModel(t *testing.T, s Shape, hw, link string, eff *Efficiency) *Model {
	t.Helper()
	h, err := HardwareByName(hw)
	if err != nil {
		t.Fatal(err)
	}
	l, err := LinkByName(link)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(s, h, l, eff)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Abs(want)+1e-15 {
		t.Errorf("%s = %.9g, want %.9g", what, got, want)
	}
}

func TestProfilesLoadAndValidate(t *testing.T) {
	hs, ls := Hardwares(), Links()
	if len(hs) < 4 || len(ls) < 10 {
		t.Fatalf("%d hardware and %d link profiles, want the four devices and ten links", len(hs), len(ls))
	}
	for _, h := range hs {
		if err := h.validate(); err != nil {
			t.Error(err)
		}
		for _, name := range []string{h.IntraNodeLink, h.HostLink} {
			if _, err := LinkByName(name); name != "" && err != nil {
				t.Errorf("hardware %s names link %q: %v", h.Name, name, err)
			}
		}
	}
	for _, l := range ls {
		if err := l.validate(); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"a100-sxm", "h100-sxm", "h200", "cpu", "H100-SXM"} {
		if _, err := HardwareByName(name); err != nil {
			t.Error(err)
		}
	}
	for _, name := range []string{"nvlink", "ib-400g", "ib-200g", "eth-100g", "eth-25g", "pcie5", "loopback", "loopback-tcp"} {
		if _, err := LinkByName(name); err != nil {
			t.Error(err)
		}
	}
}

// Every number in the profile files must say where it comes from.
func TestProfileNumbersCiteSources(t *testing.T) {
	number := regexp.MustCompile(`^\s*-?\s*[a-z_]+:\s*-?[0-9][0-9.]*(e-?[0-9]+)?\s*(#.*)?$`)
	for _, f := range []string{"data/hardware.yaml", "data/links.yaml"} {
		b, err := data.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if m := number.FindStringSubmatch(line); m != nil && strings.TrimSpace(strings.TrimPrefix(m[2], "#")) == "" {
				t.Errorf("%s:%d: %q has no source comment", f, n, strings.TrimSpace(line))
			}
		}
	}
}

// The --link profiles are priced with the figures tandem up shapes them to.
func TestLinkProfilesAreNetshapes(t *testing.T) {
	for _, p := range netshape.Profiles() {
		if !p.Shaped() {
			continue
		}
		l, err := LinkByName(p.Name)
		if err != nil {
			t.Fatalf("netshape profile %s has no link profile: %v", p.Name, err)
		}
		if l.Bandwidth != p.BytesPerSecond() || l.Latency != p.Latency.Seconds() || l.Class != ClassNet {
			t.Errorf("%s: %g B/s, %g s, class %s; netshape says %g B/s, %g s", p.Name, l.Bandwidth, l.Latency, l.Class, p.BytesPerSecond(), p.Latency.Seconds())
		}
	}
	if l, _ := LinkByName("eth-25g"); l.Bandwidth != 3.125e9 {
		t.Errorf("eth-25g: %g B/s, want 25 Gb/s", l.Bandwidth)
	}
}

func TestUnknownNamesSayWhatIsKnown(t *testing.T) {
	_, err := HardwareByName("h100")
	if !errors.Is(err, ErrUnknownHardware) || !strings.Contains(err.Error(), `"h100"`) || !strings.Contains(err.Error(), "h100-sxm") {
		t.Errorf("HardwareByName(h100) = %v, want ErrUnknownHardware naming it and the known profiles", err)
	}
	_, err = LinkByName("ib-800g")
	if !errors.Is(err, ErrUnknownLink) || !strings.Contains(err.Error(), "ib-400g") {
		t.Errorf("LinkByName(ib-800g) = %v, want ErrUnknownLink listing the known links", err)
	}
}

// KV bytes per token: 2 (K and V) × layers × KV heads × head dim × bytes.
func TestKVBytesPerTokenOfEachPreset(t *testing.T) {
	for _, tc := range []struct {
		preset string
		kind   string
		want   int64
	}{
		{"tiny", KindCPU, 2 * 2 * 8 * 16 * 4},        // 2048
		{"gqa-tiny", KindCPU, 2 * 2 * 2 * 16 * 4},    // 512
		{"gpt2-124m", KindCPU, 2 * 12 * 12 * 64 * 4}, // 73728
		{"llama-160m", KindCPU, 2 * 12 * 8 * 64 * 4}, // 49152
		{"llama-1b", KindCPU, 2 * 16 * 8 * 64 * 2},   // 32768: bf16 weights, so a bf16 cache (--kv-cache-dtype auto)
		{"llama-1b", KindGPU, 2 * 16 * 8 * 64 * 2},   // 32768: bf16 on GPUs
		{"llama-160m", KindGPU, 2 * 12 * 8 * 64 * 2}, // 24576
		{"gpt2-124m", KindGPU, 2 * 12 * 12 * 64 * 2}, // 36864
		{"tiny", KindGPU, 2 * 2 * 8 * 16 * 2},        // 1024
		{"gqa-tiny", KindGPU, 2 * 2 * 2 * 16 * 2},    // 256
		{"llama-1b", KindGPU, 32768},                 // as a literal: the sum above
		{"llama-160m", KindCPU, 49152},               // as a literal
	} {
		s, _ := presetShape(t, tc.preset, tc.kind)
		if got := s.KVBytesPerToken(); got != tc.want {
			t.Errorf("%s on %s: KV bytes per token %d, want %d", tc.preset, tc.kind, got, tc.want)
		}
	}
	if len(preset.All()) != 5 {
		t.Errorf("preset list changed (%d presets): add the new ones to this table", len(preset.All()))
	}
}

// A rank's weights summed over the TP-1 plan equal the matrices
// model.Config.Tensors lists (the loader's source of truth), counting the
// LM head once whether or not it is tied.
func TestWeightsMatchTheTensorList(t *testing.T) {
	for _, p := range preset.All() {
		s, c := presetShape(t, p.Name, KindCPU)
		var matrices int64
		for _, ts := range c.Tensors() {
			if ts.Kind == model.KindMatrix && ts.Layer >= 0 {
				matrices += ts.Elements()
			}
		}
		matrices += int64(c.VocabSize * c.Hidden)
		got, err := s.WeightBytesPerRank(1)
		if err != nil {
			t.Fatal(err)
		}
		if want := matrices * int64(s.WeightBytes); got != want {
			t.Errorf("%s: weight bytes at TP 1 = %d, want %d from the tensor list", p.Name, got, want)
		}
	}
}

// NCCL's ring: latency base + 2(n−1) hops; bandwidth term bytes ×
// 2(n−1)/n over the bus bandwidth.
func TestRingAllReduceForNRanks(t *testing.T) {
	s, _ := presetShape(t, "llama-1b", KindGPU)
	m := newModel(t, s, "h100-sxm", "ib-400g", &unit)
	const mib64 = 64 << 20
	for _, tc := range []struct {
		name  string
		g     Group
		bytes float64
		want  float64
	}{
		// 8.4 + 2·3.4 µs; 1 MiB / (450e9 · 2/2)
		{"n=2 1MiB", Group{2, 1}, 1 << 20, 8.4e-6 + 6.8e-6 + 1048576/450e9},
		// 8.4 + 6·3.4 = 28.8 µs; 64 MiB · 6/4 / 450e9 = 223.696213 µs
		{"n=4 64MiB", Group{4, 1}, mib64, 28.8e-6 + 223.696213e-6},
		// 8.4 + 14·3.4 = 56.0 µs; 64 MiB · 14/8 / 450e9 = 260.978916 µs
		{"n=8 64MiB", Group{8, 1}, mib64, 56.0e-6 + 260.978916e-6},
		// two nodes: 4 network hops of 14 + 1 µs, 26 NVLink hops of 3.4 µs,
		// base 8.4: 156.8 µs; 64 MiB · 30/16 / 50e9 = 2516.58240 µs
		{"n=16 over 2 nodes 64MiB", Group{16, 2}, mib64, 156.8e-6 + 2516.58240e-6},
	} {
		got := m.RingAllReduce(tc.g, tc.bytes)
		if math.Abs(got-tc.want) > 1e-6*tc.want {
			t.Errorf("%s: ring allreduce %.6g s, want %.6g", tc.name, got, tc.want)
		}
		if best := m.AllReduce(tc.g, tc.bytes); best > got*(1+1e-12) {
			t.Errorf("%s: NCCL's choice %.6g s is slower than its ring %.6g", tc.name, best, got)
		}
	}
	// Tree, 2 nodes of 8: base 0 + 2·(7 hops·28 µs + log2(2)·(28+1) µs);
	// bandwidth 50e9 · 0.92 · 0.5.
	want := 2*(7*28e-6+29e-6) + float64(mib64)/(50e9*0.92*0.5)
	if got := m.TreeAllReduce(Group{16, 2}, mib64); math.Abs(got-want) > 1e-9 {
		t.Errorf("tree allreduce n=16 over 2 nodes: %.6g s, want %.6g", got, want)
	}
	// Small messages go to the low-latency protocol: an 8 KiB allreduce
	// on 8 NVLink ranks is faster than the Simple ring's latency alone.
	if got := m.AllReduce(Group{8, 1}, 8<<10); got >= 56e-6 {
		t.Errorf("8 KiB allreduce on 8 ranks: %.3g s, want below the Simple ring's 56 µs latency", got)
	}
}

// Tandem's TCP ring on CPUs: recursive doubling up to 64 KiB, a ring beyond.
func TestTCPAllReduce(t *testing.T) {
	s, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, s, "cpu", "loopback-tcp", &unit)
	// α = 8.5 µs, β = 1.4 GB/s.
	for _, tc := range []struct {
		name  string
		n     int
		bytes float64
		want  float64
	}{
		{"doubling n=4 16KiB", 4, 16 << 10, 2 * (8.5e-6 + 16384/1.4e9)}, // 40.405 µs
		{"doubling n=5 16KiB", 5, 16 << 10, 4 * (8.5e-6 + 16384/1.4e9)}, // fold in, 2 steps, result out
		{"doubling n=8 4KiB", 8, 4 << 10, 3 * (8.5e-6 + 4096/1.4e9)},
		{"ring n=2 1MiB", 2, 1 << 20, 2 * (8.5e-6 + 524288/1.4e9)}, // 765.98 µs
		{"ring n=4 1MiB", 4, 1 << 20, 6 * (8.5e-6 + 262144/1.4e9)}, // 1174.5 µs
	} {
		near(t, tc.name, m.AllReduce(Group{TP: tc.n, Nodes: 1}, tc.bytes), tc.want)
	}
	shaped := newModel(t, s, "cpu", "eth-25g", &unit)
	// eth-25g: netshape's 2 µs more latency, bandwidth min(3.125, 1.4) GB/s.
	near(t, "doubling n=2 4KiB over eth-25g", shaped.AllReduce(Group{2, 1}, 4096), 10.5e-6+4096/1.4e9)
}

// A decode step at the bandwidth roofline reads every weight of the
// rank once, the LM head, and the sequence's KV; the CPU profile's kernels
// stream and compute in turn, so its arithmetic adds to the reads.
func TestDecodeStepAtTheBandwidthRoofline(t *testing.T) {
	cpuShape, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, cpuShape, "cpu", "loopback", &unit)
	c, err := m.Step(Group{1, 1}, []Rows{{Pos: 100, Rows: 1, Sample: true}})
	if err != nil {
		t.Fatal(err)
	}
	// Layers: 12 × (1024·64·(2·16+2·8) + 3·1024·2048) × 4 B = 452,984,832 B;
	// LM head: 50257 × 1024 × 4 B = 205,852,672 B; KV: (100+1 read +1
	// written) × 49,152 B = 5,013,504 B, at 14.8 GB/s; plus 2 FLOPs per
	// weight and 4 per (query, key) pair and head dimension at 166 GFLOP/s.
	linear := 452984832/14.8e9 + 2*113246208/166e9
	head := 205852672/14.8e9 + 2*51463168/166e9
	attention := 5013504/14.8e9 + 4*101*12*1024/166e9
	near(t, "linear", c.Linear, linear)
	near(t, "LM head", c.LMHead, head)
	near(t, "attention", c.Attention, attention)
	near(t, "compute", c.Compute(), linear+head+attention) // 46.8 ms

	// Llama-3.1-8B shape, bf16, on one H100 SXM: 7,504,658,432 weights
	// × 2 B = 15,009,316,864 B at 3.35 TB/s = 4.4804 ms.
	c8 := llama8B(t)
	s8, err := NewShape("Llama-3.1-8B", c8, KindGPU, DTypes{})
	if err != nil {
		t.Fatal(err)
	}
	h := newModel(t, s8, "h100-sxm", "ib-400g", &unit)
	c, err = h.Step(Group{1, 1}, []Rows{{Pos: 0, Rows: 1, Sample: true}})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "8B linear+LM head", c.Linear+c.LMHead, 15009316864/3.35e12)
	// At TP 2 each rank reads half the layers and half the LM head.
	c2, err := h.Step(Group{2, 1}, []Rows{{Pos: 0, Rows: 1, Sample: true}})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "8B linear+LM head at TP 2", c2.Linear+c2.LMHead, 15009316864/2/3.35e12)
	if c2.AllReduce <= 0 || c2.Gather <= 0 {
		t.Errorf("TP 2 step has allreduce %g and gather %g, want both positive", c2.AllReduce, c2.Gather)
	}
}

// Prefill is compute-bound: 2 FLOPs per weight per row.
func TestPrefillStepAtTheComputeRoofline(t *testing.T) {
	s, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, s, "cpu", "loopback", &unit)
	c, err := m.Step(Group{1, 1}, []Rows{{Pos: 0, Rows: 512, Sample: true}})
	if err != nil {
		t.Fatal(err)
	}
	// 2 × 512 × 113,246,208 layer weights = 115.96 GFLOP at 166 GFLOP/s,
	// after reading them at 14.8 GB/s (the CPU profile's serial kernels).
	near(t, "linear", c.Linear, 2*512*113246208/166e9+452984832/14.8e9)
	// Attention: 4 × (512·513/2 pairs) × 12 layers × 16·64 = 6.4575 GFLOP,
	// after 512 × 2 KV rows of 49,152 B.
	near(t, "attention", c.Attention, 4*131328*12*1024/166e9+1024*49152/14.8e9)

	// On a GPU the roofline is the larger: a 512-token prefill of the 8B
	// shape's 6,979,321,856 layer weights is compute alone, 2 × 512 FLOPs
	// per weight at 989 TFLOP/s (7.23 ms; their bf16 read is 4.17 ms).
	s8, err := NewShape("Llama-3.1-8B", llama8B(t), KindGPU, DTypes{})
	if err != nil {
		t.Fatal(err)
	}
	h := newModel(t, s8, "h100-sxm", "ib-400g", &unit)
	c8, err := h.Step(Group{1, 1}, []Rows{{Pos: 0, Rows: 512, Sample: true}})
	if err != nil {
		t.Fatal(err)
	}
	near(t, "8B linear", c8.Linear, 2*512*6979321856/989e12)
}

// BF16 weights on a CPU with AMX are priced at the tile unit's rate;
// FP32 weights, and a profile or calibration without tile_compute, at
// the FMA units'.
func TestBF16ProductsOnTheTiles(t *testing.T) {
	p, err := preset.Get("llama-160m")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Config()
	if err != nil {
		t.Fatal(err)
	}
	tiles := unit
	tiles.TileCompute = 0.5
	for _, tc := range []struct {
		name   string
		weight int
		eff    Efficiency
		peak   float64
	}{
		{"bf16 on the tiles", 2, tiles, 6.4e12 * 0.5},
		{"f32 on the FMA units", 4, tiles, 166e9},
		{"bf16 without tile_compute", 2, unit, 166e9},
	} {
		s, err := NewShape("llama-160m", c, KindCPU, DTypes{Weight: tc.weight})
		if err != nil {
			t.Fatal(err)
		}
		m := newModel(t, s, "cpu", "loopback", &tc.eff)
		cost, err := m.Step(Group{1, 1}, []Rows{{Pos: 0, Rows: 512}})
		if err != nil {
			t.Fatal(err)
		}
		// 113,246,208 layer weights: 2 × 512 FLOPs each, after reading them.
		near(t, tc.name+": linear", cost.Linear, 2*512*113246208/tc.peak+float64(113246208*tc.weight)/14.8e9)
	}
}

func TestLargerTPNeverLowersAllReduceBytes(t *testing.T) {
	for _, p := range preset.All() {
		for _, kind := range []string{KindCPU, KindGPU} {
			s, _ := presetShape(t, p.Name, kind)
			hw, link := "h100-sxm", "ib-400g"
			if kind == KindCPU {
				hw, link = "cpu", "loopback"
			}
			m := newModel(t, s, hw, link, &unit)
			prevPayload, prevWire := -1.0, -1.0
			for _, tp := range []int{1, 2, 4, 8, 16} {
				if _, err := s.Plan(tp); err != nil {
					continue
				}
				c, err := m.Step(m.GroupOf(tp), []Rows{{Pos: 10, Rows: 1, Sample: true}})
				if err != nil {
					t.Fatal(err)
				}
				wire := c.AllReduceBytes * 2 * float64(tp-1) / float64(tp)
				if c.AllReduceBytes < prevPayload || wire < prevWire {
					t.Errorf("%s/%s: TP %d moves %g payload, %g wire bytes per token, below the smaller TP's %g, %g",
						p.Name, kind, tp, c.AllReduceBytes, wire, prevPayload, prevWire)
				}
				if tp > 1 && int64(c.AllReduceBytes) != s.AllReduceBytesPerToken(tp) {
					t.Errorf("%s/%s TP %d: step payload %g, analytic %d", p.Name, kind, tp, c.AllReduceBytes, s.AllReduceBytesPerToken(tp))
				}
				prevPayload, prevWire = c.AllReduceBytes, wire
			}
		}
	}
}

func TestKVTransfer(t *testing.T) {
	s, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, s, "cpu", "eth-25g", &unit)
	// 2048 tokens × 49,152 B = 100,663,296 B. TP 2 → TP 2: each prefill rank
	// sends half; over min(25 Gb/s, 1.4 GB/s) with 8.5 + 2 µs of latency.
	got, err := m.KVTransfer(2, 2, 2048, false)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "KV transfer 2→2", got, 10.5e-6+100663296/2/1.4e9)
	// TP 1 → TP 4: one sender pushes everything.
	got, err = m.KVTransfer(1, 4, 2048, false)
	if err != nil {
		t.Fatal(err)
	}
	near(t, "KV transfer 1→4", got, 10.5e-6+100663296/1.4e9)
	b, err := s.KVTransferBytesPerToken(2, 16)
	if err != nil {
		t.Fatal(err)
	}
	if b != 2*49152 { // 16 decode ranks hold 8 heads twice over
		t.Errorf("KV bytes per token 2→16: %d, want %d (each replica receives its head)", b, 2*49152)
	}
	// Loading: the busiest decode rank writes its heads at memory speed;
	// 1 → 4 gives each decode rank 2 of the 8 heads.
	near(t, "KV load 1→4", m.KVLoad(1, 4, 2048), 100663296/4/14.8e9)
	// Overlap: only what outlasts the last step shows, at least one layer's share.
	near(t, "hidden transfer", m.VisibleTransfer(0.012, 0.120), 0.001)
	near(t, "visible transfer", m.VisibleTransfer(0.240, 0.120), 0.240-0.120+0.010)
}

// llama8B is Llama-3.1-8B's published config.json shape.
func llama8B(t *testing.T) *model.Config {
	t.Helper()
	c, err := model.ParseConfig([]byte(`{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
	"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
	"max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000, "torch_dtype": "bfloat16",
	"tie_word_embeddings": false, "bos_token_id": 128000, "eos_token_id": 128001}`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// On a shared device runnable threads share its cores fairly: a rank
// of T threads while N run gets T·min(1, cores/N)/cores of the device.
func TestSharedRate(t *testing.T) {
	s, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, s, "cpu", "loopback", &unit) // 2 cores
	bg := unit
	bg.BackgroundLoad = 2
	busy := newModel(t, s, "cpu", "loopback", &bg)
	for _, tc := range []struct {
		name             string
		m                *Model
		threads, running int
		want             float64
	}{
		{"one rank on both cores", m, 2, 2, 1},
		{"one single-thread rank alone", m, 1, 1, 0.5},
		{"TP-2, one thread each", m, 1, 2, 0.5},
		{"TP-4, one thread each", m, 1, 4, 0.25},
		{"two 2-thread ranks", m, 2, 4, 0.5},
		{"more threads than cores, alone", m, 8, 8, 1},
		{"busy count below own threads", m, 2, 0, 1},
		{"2 threads beside 2 of background", busy, 2, 2, 0.5},
		{"1 thread beside 2 of background", busy, 1, 1, 1.0 / 3},
	} {
		near(t, tc.name, tc.m.SharedRate(tc.threads, tc.running), tc.want)
	}
	h := newModel(t, s, "h100-sxm", "ib-400g", &unit)
	near(t, "unshared device", h.SharedRate(1, 64), 1)
	for ranks, want := range map[int]int{1: 2, 2: 1, 3: 1, 8: 1} {
		if got := m.ThreadsPerRank(ranks); got != want {
			t.Errorf("%d ranks on 2 cores: %d threads each, want %d (tandem up's rule)", ranks, got, want)
		}
	}
}

// --kv-cache-dtype sets the KV element size: the cache per token, what a
// disaggregated prompt moves and what decode attention reads all follow.
func TestKVCacheDType(t *testing.T) {
	_, c := presetShape(t, "llama-160m", KindCPU)
	for _, tc := range []struct {
		name string
		kind string
		want int
	}{
		{"auto", KindCPU, 4}, {"", KindCPU, 4}, {"auto", KindGPU, 2},
		{"fp32", KindGPU, 4}, {"float32", KindCPU, 4}, {"BF16", KindCPU, 2}, {"bfloat16", KindGPU, 2},
		{"fp16", KindCPU, 2}, {"float16", KindGPU, 2},
	} {
		kv, err := KVCacheDTypeBytes(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewShape("llama-160m", c, tc.kind, DTypes{KV: kv})
		if err != nil {
			t.Fatal(err)
		}
		if s.KVBytes != tc.want || s.KVBytesPerToken() != int64(2*12*8*64*tc.want) {
			t.Errorf("--kv-cache-dtype %q on %s: %d-byte elements, %d bytes per token", tc.name, tc.kind, s.KVBytes, s.KVBytesPerToken())
		}
	}
	if _, err := KVCacheDTypeBytes("fp8"); err == nil || !strings.Contains(err.Error(), `"fp8"`) {
		t.Errorf("fp8: %v, want an error naming it", err)
	}
	// An F16 model on a CPU keeps its weights and, by auto, its KV in 16
	// bits, as compute/cpu does.
	h := *c
	h.TorchDType = "float16"
	if s, err := NewShape("llama-160m", &h, KindCPU, DTypes{}); err != nil || s.WeightBytes != 2 || s.KVBytes != 2 {
		t.Errorf("float16 on a CPU: %d-byte weights, %d-byte KV (%v), want 2 and 2", s.WeightBytes, s.KVBytes, err)
	}
	fp32, _ := NewShape("llama-160m", c, KindCPU, DTypes{KV: 4})
	bf16, _ := NewShape("llama-160m", c, KindCPU, DTypes{KV: 2})
	m32, m16 := newModel(t, fp32, "cpu", "eth-25g", &unit), newModel(t, bf16, "cpu", "eth-25g", &unit)
	// A decode row at position 4000 reads 4002 tokens of KV: 196.7 MB in
	// fp32 at 14.8 GB/s, half of it in bf16; then (the CPU's serial
	// kernels) the same 4·4001·12·1024 FLOPs at 166 GFLOP/s in both.
	row := []Rows{{Pos: 4000, Rows: 1, Sample: true}}
	c32, _ := m32.Step(Group{1, 1}, row)
	c16, _ := m16.Step(Group{1, 1}, row)
	flops := 4 * 4001 * 12 * 1024 / 166e9
	near(t, "fp32 decode attention", c32.Attention, 4002*49152/14.8e9+flops)
	near(t, "bf16 decode attention", c16.Attention, 4002*24576/14.8e9+flops)
	x32, _ := m32.KVTransfer(1, 1, 2048, false)
	x16, _ := m16.KVTransfer(1, 1, 2048, false)
	near(t, "bf16 transfer", x16-10.5e-6, (x32-10.5e-6)/2)
}

// Processes of one machine sum their allreduces through nccl/ring's
// shared memory: one barrier a slot while the n copies fit 256 KiB, else
// two, and the bytes copied and added at the profile's combined rate.
func TestSharedMemoryAllReduce(t *testing.T) {
	s, _ := presetShape(t, "llama-160m", KindCPU)
	m := newModel(t, s, "cpu", "loopback", &unit)
	// Barrier 7 µs (once more per rank beyond the 2 cores), 35 GB/s.
	for _, tc := range []struct {
		name  string
		n     int
		bytes float64
		want  float64
	}{
		{"n=2 4KiB", 2, 4 << 10, 7e-6 + 2*5*4096/35e9},
		{"n=8 4KiB", 8, 4 << 10, 7*7e-6 + 8*11*4096/35e9},
		{"n=2 1MiB", 2, 1 << 20, 2*2*7e-6 + 2*4.5*(1<<20)/35e9},     // two slots, two barriers each
		{"n=4 80KiB", 4, 80 << 10, 2*3*7e-6 + 4*4.75*(80<<10)/35e9}, // 4 copies exceed 256 KiB: two barriers
		{"n=4 48KiB", 4, 48 << 10, 3*7e-6 + 4*7*(48<<10)/35e9},      // 4 copies fit 256 KiB: one barrier
	} {
		near(t, tc.name, m.AllReduce(Group{TP: tc.n, Nodes: tc.n}, tc.bytes), tc.want)
	}
	// The same machine with NCCL_SHM_DISABLE=1 pays TCP's round trips.
	tcp := newModel(t, s, "cpu", "loopback-tcp", &unit)
	if shm, sock := m.AllReduce(Group{TP: 2, Nodes: 2}, 4096), tcp.AllReduce(Group{TP: 2, Nodes: 2}, 4096); shm >= sock {
		t.Errorf("4 KiB at n=2: shared memory %.3g s, TCP %.3g s; want shared memory faster", shm, sock)
	}
}
