package costmodel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// ErrInvalidCalibration is wrapped by every calibration file error.
var ErrInvalidCalibration = errors.New("invalid calibration")

// Calibration is efficiency factors fitted to measured runs of one
// hardware profile (`tandem plan calibrate` writes it), with the fit's
// error per component so a reader knows how far to trust it.
type Calibration struct {
	// Hardware is the profile the runs were measured on.
	Hardware   string     `json:"hardware"`
	Efficiency Efficiency `json:"efficiency"`
	// Fit is the relative error of the fitted model per component
	// (compute, allreduce, KV transfer, ...), over the samples it used.
	Fit []FitError `json:"fit,omitempty"`
	// Source names what was fitted (a bench result directory).
	Source string `json:"source,omitempty"`
}

// FitError is how well one component's fitted time matches its samples:
// the median and 90th percentile of |predicted − measured| / measured.
type FitError struct {
	Component string  `json:"component"`
	Samples   int     `json:"samples"`
	MedianRel float64 `json:"median_rel_error"`
	P90Rel    float64 `json:"p90_rel_error"`
}

// LoadCalibration reads and checks a calibration file; errors name it.
func LoadCalibration(path string) (*Calibration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Calibration
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrInvalidCalibration, err)
	}
	if _, err := HardwareByName(c.Hardware); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrInvalidCalibration, err)
	}
	if err := c.Efficiency.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", path, ErrInvalidCalibration, err)
	}
	return &c, nil
}

// Save writes the calibration as indented JSON.
func (c *Calibration) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
