package plot

import (
	"image/png"
	"os"
	"strings"
	"testing"
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
