package calibration

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"

	"github.com/tandemllm/tandem/costmodel"
)

// Row is one metric of one case, predicted against measured.
type Row struct {
	Case      string  `json:"case"`
	Metric    string  `json:"metric"`
	Predicted float64 `json:"predicted"`
	Measured  float64 `json:"measured"`
	// RelError is (predicted − measured) / measured; NaN (null in JSON is
	// left out by the caller) when the measured value is too small.
	RelError float64 `json:"rel_error"`
}

// ValidateKeys are the metrics Validate reports, in order.
var ValidateKeys = append(slices.Clone(benchKeys), partKeys...)

// Validate predicts every case with eff and returns each metric
// predicted against measured, and the fit-error summary per metric.
func Validate(cases []Case, hw costmodel.Hardware, eff costmodel.Efficiency) ([]Row, []costmodel.FitError, error) {
	r, err := newReplay(cases, hw)
	if err != nil {
		return nil, nil, err
	}
	var rows []Row
	for i, c := range cases {
		pred, err := r.predict(i, eff)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range ValidateKeys {
			m, ok := c.Measured[k]
			if !ok {
				continue
			}
			rows = append(rows, Row{Case: c.Name, Metric: k, Predicted: pred[k], Measured: m, RelError: relErr(k, pred, c.Measured)})
		}
	}
	sum, err := r.errors(eff, ValidateKeys)
	return rows, sum, err
}

// WriteRows prints predicted against measured, a line per case and metric.
func WriteRows(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CASE\tMETRIC\tPREDICTED\tMEASURED\tERROR\t")
	for _, r := range rows {
		e := "-"
		if !math.IsNaN(r.RelError) {
			e = fmt.Sprintf("%+.1f%%", 100*r.RelError)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%s\t\n", r.Case, r.Metric, r.Predicted, r.Measured, e)
	}
	return tw.Flush()
}

// WriteFit prints the error left per component.
func WriteFit(w io.Writer, fit []costmodel.FitError) error {
	if _, err := fmt.Fprintf(w, "%-26s %3s  %7s  %7s\n", "COMPONENT", "N", "MEDIAN", "P90"); err != nil {
		return err
	}
	for _, f := range fit {
		if _, err := fmt.Fprintln(w, describe(f)); err != nil {
			return err
		}
	}
	return nil
}
