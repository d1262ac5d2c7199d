package plot

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Series is one labelled set of values (a configuration, or a load point
// of a sweep).
type Series struct {
	Label string
	// Values are samples (CDF), or Y values at X (curves).
	Values []float64
	X      []float64
}

// Panel is one chart of a figure.
type Panel struct {
	Title, XLabel, YLabel string
	Series                []Series
}

// cdfPoints bounds the points drawn of one CDF line.
const cdfPoints = 300

// Files are the paths a figure was written to.
type Files struct{ PNG, SVG string }

// CDFs draws each panel's series as empirical cumulative distributions,
// side by side, to dir/name.png and dir/name.svg.
func CDFs(dir, name string, panels []Panel) (Files, error) {
	ps, err := cdfPlots(panels)
	if err != nil {
		return Files{}, err
	}
	return write(dir, name, ps)
}

func cdfPlots(panels []Panel) ([]*plot.Plot, error) {
	var ps []*plot.Plot
	for _, pn := range panels {
		p := newPlot(pn.Title, pn.XLabel, "fraction of samples")
		p.Legend.Top, p.Legend.Left = false, false // the empty corner of a CDF
		for i, s := range pn.Series {
			if len(s.Values) == 0 {
				continue
			}
			v := slices.Clone(s.Values)
			slices.Sort(v)
			// At most cdfPoints points a line: the chart looks the same and
			// the SVG stays small.
			step := max(1, len(v)/cdfPoints)
			var xys plotter.XYs
			for k := 0; k < len(v); k += step {
				xys = append(xys, plotter.XY{X: v[k], Y: float64(k+1) / float64(len(v))})
			}
			if last := len(v) - 1; last%step != 0 {
				xys = append(xys, plotter.XY{X: v[last], Y: 1})
			}
			if err := addLine(p, i, s.Label, xys, false); err != nil {
				return nil, err
			}
		}
		pad(p, 0)
		ps = append(ps, p)
	}
	return ps, nil
}

// Curves draws each panel's series as lines through (X, Values) with a
// mark at every point, to dir/name.png and dir/name.svg.
func Curves(dir, name string, panels []Panel) (Files, error) {
	ps, err := curvePlots(panels)
	if err != nil {
		return Files{}, err
	}
	return write(dir, name, ps)
}

func curvePlots(panels []Panel) ([]*plot.Plot, error) {
	var ps []*plot.Plot
	for _, pn := range panels {
		p := newPlot(pn.Title, pn.XLabel, pn.YLabel)
		p.Legend.Top, p.Legend.Left = true, true
		for i, s := range pn.Series {
			if len(s.X) != len(s.Values) {
				return nil, fmt.Errorf("plot: %s: %d x values for %d y values", s.Label, len(s.X), len(s.Values))
			}
			if len(s.X) == 0 {
				continue
			}
			xys := make(plotter.XYs, len(s.X))
			for k := range s.X {
				xys[k] = plotter.XY{X: s.X[k], Y: s.Values[k]}
			}
			if err := addLine(p, i, s.Label, xys, len(xys) < 40); err != nil {
				return nil, err
			}
		}
		pad(p, len(pn.Series)) // the legend sits top left
		ps = append(ps, p)
	}
	return ps, nil
}

// Margins of a chart's axes beyond its data, as fractions of the data's
// span: without them the marks and lines at the extremes are cut in half
// by the frame. legendRow is the room one legend entry takes above the
// data when the legend sits on top.
const (
	margin    = 0.04
	legendRow = 0.075
)

// pad widens p's axes past its data by margin each way, and its Y axis
// by legendRows entries more on top, so that nothing drawn is trimmed
// at the frame or hidden under the legend; ticks get plain labels.
func pad(p *plot.Plot, legendRows int) {
	for i, ax := range []*plot.Axis{&p.X, &p.Y} {
		span := ax.Max - ax.Min
		if span <= 0 {
			span = math.Max(math.Abs(ax.Max), 1)
		}
		ax.Min -= margin * span
		ax.Max += margin * span
		if i == 1 {
			ax.Max += float64(legendRows) * legendRow * span
		}
		ax.Tick.Marker = ticks{}
	}
}

// ticks are gonum's default ticks labelled with as few digits as their
// values need ("2250", not "2250.00").
type ticks struct{}

func (ticks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i, t := range ts {
		if t.Label != "" {
			v, _ := strconv.ParseFloat(strconv.FormatFloat(t.Value, 'g', 10, 64), 64)
			ts[i].Label = strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ts
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, x, y
	p.Add(plotter.NewGrid())
	return p
}

// addLine adds series i in its colour, with marks when asked.
func addLine(p *plot.Plot, i int, label string, xys plotter.XYs, marks bool) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return fmt.Errorf("plot: %s: %w", label, err)
	}
	l.Color = Colour(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	if marks {
		s, err := plotter.NewScatter(xys)
		if err != nil {
			return fmt.Errorf("plot: %s: %w", label, err)
		}
		s.Color = Colour(i)
		s.Shape = draw.CircleGlyph{}
		p.Add(s)
	}
	p.Legend.Add(label, l)
	return nil
}

// Colour is series i's colour.
func Colour(i int) color.Color { return plotutil.Color(i) }

// write lays the plots out in rows of at most two and writes PNG and
// SVG.
func write(dir, name string, ps []*plot.Plot) (Files, error) {
	if len(ps) == 0 {
		return Files{}, fmt.Errorf("plot: %s: nothing to draw", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("--plot %s: %w", dir, err)
	}
	cols := min(2, len(ps))
	rows := (len(ps) + cols - 1) / cols
	grid := make([][]*plot.Plot, rows)
	for i, p := range ps {
		grid[i/cols] = append(grid[i/cols], p)
	}
	for len(grid[rows-1]) < cols {
		grid[rows-1] = append(grid[rows-1], nil)
	}
	w, h := vg.Length(cols)*5*vg.Inch, vg.Length(rows)*3.8*vg.Inch
	files := Files{PNG: filepath.Join(dir, name+".png"), SVG: filepath.Join(dir, name+".svg")}
	png := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(96))}
	svg := vgsvg.New(w, h)
	for _, c := range []vg.CanvasSizer{png, svg} {
		dc := draw.New(c)
		tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
			PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
		canvases := plot.Align(grid, tiles, dc)
		for i, p := range ps {
			p.Draw(canvases[i/cols][i%cols])
		}
	}
	for path, c := range map[string]interface {
		WriteTo(w io.Writer) (int64, error)
	}{files.PNG: png, files.SVG: svg} {
		if err := writeFile(path, c); err != nil {
			return Files{}, err
		}
	}
	return files, nil
}

func writeFile(path string, c interface {
	WriteTo(w io.Writer) (int64, error)
}) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("--plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--plot %s: %w", path, err)
	}
	return nil
}
