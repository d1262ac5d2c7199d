package plot

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Stack is one panel of stacked bars: one bar per category, each the
// sum of its parts, one colour per part.
type Stack struct {
	Title, YLabel string
	Categories    []string
	// Parts[i] is part i's label and its value in each category.
	Parts []Part
}

// Part is one layer of a stack.
type Part struct {
	Label  string
	Values []float64
}

// Stacks draws each stack as a panel of stacked bars, to dir/name.png
// and dir/name.svg.
func Stacks(dir, name string, stacks []Stack) (Files, error) {
	var ps []*plot.Plot
	for _, st := range stacks {
		p := newPlot(st.Title, "", st.YLabel)
		p.Legend.Top, p.Legend.Left = true, false
		var below *plotter.BarChart
		for i, part := range st.Parts {
			if len(part.Values) != len(st.Categories) {
				return Files{}, fmt.Errorf("plot: %s: %d values for %d categories", part.Label, len(part.Values), len(st.Categories))
			}
			b, err := plotter.NewBarChart(plotter.Values(part.Values), vg.Points(28))
			if err != nil {
				return Files{}, fmt.Errorf("plot: %s: %w", part.Label, err)
			}
			b.Color, b.LineStyle.Width = Colour(i), 0
			if below != nil {
				b.StackOn(below)
			}
			below = b
			p.Add(b)
			p.Legend.Add(part.Label, b)
		}
		p.NominalX(st.Categories...)
		// Room above the tallest bar for the legend, and beside the
		// outer bars.
		top := 0.0
		for k := range st.Categories {
			sum := 0.0
			for _, part := range st.Parts {
				sum += part.Values[k]
			}
			top = max(top, sum)
		}
		p.Y.Min, p.Y.Max = 0, 1.6*top
		p.X.Min, p.X.Max = -0.6, float64(len(st.Categories))-0.4
		ps = append(ps, p)
	}
	return write(dir, name, ps)
}
