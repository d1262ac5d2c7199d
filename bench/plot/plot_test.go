package plot

import (
	"image/png"
	"os"
	"strings"
	"testing"

	"gonum.org/v1/plot"
)

func TestFigures(t *testing.T) {
	dir := t.TempDir()
	two := []Series{{Label: "tp2", Values: []float64{3, 1, 2}, X: []float64{1, 2, 3}}, {Label: "tp8", Values: []float64{5, 4, 6}, X: []float64{1, 2, 3}}}
	tests := []struct {
		name  string
		draw  func() (Files, error)
		cells int
	}{
		{"cdf", func() (Files, error) {
			return CDFs(dir, "cdf", []Panel{{Title: "TTFT", Series: two}, {Title: "TPOT", Series: two}, {Title: "ITL", Series: two}})
		}, 3},
		{"curves", func() (Files, error) { return Curves(dir, "curves", []Panel{{Title: "ITL", Series: two}}) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.draw()
			if err != nil {
				t.Fatal(err)
			}
			pf, err := os.Open(f.PNG)
			if err != nil {
				t.Fatal(err)
			}
			defer pf.Close()
			img, err := png.Decode(pf)
			if err != nil {
				t.Fatalf("%s: %v", f.PNG, err)
			}
			// Panels go two to a row.
			cols, rows := min(2, tt.cells), (tt.cells+1)/2
			if b := img.Bounds(); b.Dx() != cols*5*96 || b.Dy() < rows*3*96 {
				t.Fatalf("%s: %v for %d panels", f.PNG, b, tt.cells)
			}
			svg, err := os.ReadFile(f.SVG)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"<svg", "tp2", "tp8"} {
				if !strings.Contains(string(svg), want) {
					t.Errorf("%s lacks %q", f.SVG, want)
				}
			}
		})
	}
	if _, err := Curves(dir, "bad", []Panel{{Series: []Series{{Label: "x", Values: []float64{1}, X: []float64{1, 2}}}}}); err == nil {
		t.Fatal("mismatched X and Y drew a figure")
	}
}

func TestStacks(t *testing.T) {
	dir := t.TempDir()
	f, err := Stacks(dir, "split", []Stack{{Title: "c1", YLabel: "ms", Categories: []string{"tp2", "tp8"},
		Parts: []Part{{Label: "compute", Values: []float64{3, 2}}, {Label: "allreduce", Values: []float64{1, 4}}}}})
	if err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(f.SVG)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"compute", "allreduce", "tp8"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("%s lacks %q", f.SVG, want)
		}
	}
	if _, err := Stacks(dir, "bad", []Stack{{Categories: []string{"a"}, Parts: []Part{{Label: "x", Values: []float64{1, 2}}}}}); err == nil {
		t.Fatal("values for missing categories drew a figure")
	}
}

// TestNothingTrimmed: every point of every series lies inside its
// chart's axes with a margin, so no mark or line end is cut by the
// frame, the curves' legend has room above the data, and tick labels
// carry no needless zeros.
func TestNothingTrimmed(t *testing.T) {
	two := []Series{{Label: "tp2", Values: []float64{0, 1250, 2250}, X: []float64{1, 2, 32}}, {Label: "tp8", Values: []float64{5, 400, 6}, X: []float64{1, 2, 32}}}
	cdfs, err := cdfPlots([]Panel{{Title: "TTFT", Series: two}})
	if err != nil {
		t.Fatal(err)
	}
	curves, err := curvePlots([]Panel{{Title: "ITL", Series: two}})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		p          *plot.Plot
		xs, ys     []float64
		legendRows int
	}{
		"cdf":    {cdfs[0], []float64{0, 2250}, []float64{1.0 / 3, 1}, 0},
		"curves": {curves[0], []float64{1, 32}, []float64{0, 2250}, 2},
	} {
		for _, ax := range []struct {
			name       string
			a          plot.Axis
			lo, hi     float64
			legendRows int
		}{{"x", c.p.X, c.xs[0], c.xs[1], 0}, {"y", c.p.Y, c.ys[0], c.ys[1], c.legendRows}} {
			span := ax.hi - ax.lo
			if ax.a.Min > ax.lo-0.03*span || ax.a.Max < ax.hi+(0.03+0.07*float64(ax.legendRows))*span {
				t.Errorf("%s: %s axis [%v, %v] trims data [%v, %v]", name, ax.name, ax.a.Min, ax.a.Max, ax.lo, ax.hi)
			}
			for _, tk := range ax.a.Tick.Marker.Ticks(ax.a.Min, ax.a.Max) {
				if strings.HasSuffix(tk.Label, ".00") || strings.HasSuffix(tk.Label, ".0") {
					t.Errorf("%s: %s tick %q", name, ax.name, tk.Label)
				}
			}
		}
	}
}
