package main

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/calibration"
	"github.com/tandemllm/tandem/costmodel"
)

func newPlanCalibrateCmd() *cobra.Command {
	var from, hardware, out string
	var sweeps int
	cmd := &cobra.Command{
		Use:   "calibrate --from RESULT_DIR [--hardware cpu] [--out FILE]",
		Short: "Fit the cost model's efficiency factors to tandem bench compare runs",
		Long: `calibrate replays every configuration of the tandem bench compare reports in
RESULT_DIR (saved with --save-detailed) in the simulator and searches the
efficiency factors (memory and compute efficiency, step and layer overhead,
collective latency, bandwidth and skew, KV transfer efficiency, sampling cost,
coordinator overhead) that reproduce what was measured: the per-token split
the traces joined (compute, allreduce, KV transfer, sampling) and the TTFT
and TPOT. It prints the error left per component and writes the factors for
tandem plan --calibration and tandem plan validate.`,
		Example: `  tandem bench compare --preset llama-160m --tp 1,2,4 --modes unified,disaggregated \
      --max-concurrency 4 --random-input-len 256 --random-output-len 32 --num-prompts 16 \
      --save-detailed --result-dir runs/a
  tandem plan calibrate --from runs/a --out cpu-calibration.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hw, cases, err := loadRuns(from, hardware)
			if err != nil {
				return err
			}
			if out == "" {
				out = filepath.Join(dirOf(from), "calibration-"+hw.Name+".json")
			}
			errw := cmd.ErrOrStderr()
			fmt.Fprintf(errw, "calibrate: %d cases from %s\n", len(cases), from)
			cal, err := calibration.Fit(cmd.Context(), cases, hw, calibration.FitOptions{Sweeps: sweeps,
				Progress: func(s int, obj float64) { fmt.Fprintf(errw, "calibrate: sweep %d, loss %.4g\n", s, obj) }})
			if err != nil {
				return err
			}
			cal.Source = from
			if err := cal.Save(out); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "fitted on %d cases of %s (%s); error left per component (|predicted − measured| / measured):\n\n", len(cases), from, hw.Name)
			if err := calibration.WriteFit(w, cal.Fit); err != nil {
				return err
			}
			b, _ := json.MarshalIndent(cal.Efficiency, "", "  ")
			fmt.Fprintf(w, "\nefficiency factors:\n%s\nwrote %s\n", b, out)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "a tandem bench compare result directory (or one report JSON)")
	fl.StringVar(&hardware, "hardware", "cpu", "the hardware profile the runs were measured on")
	fl.StringVar(&out, "out", "", "where to write the calibration (default: RESULT_DIR/calibration-HARDWARE.json)")
	fl.IntVar(&sweeps, "sweeps", 8, "passes of the search over all the factors")
	return cmd
}

func newPlanValidateCmd() *cobra.Command {
	var from, hardware, calFile string
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "validate --from RESULT_DIR [--calibration FILE]",
		Short: "Predict the configurations of a tandem bench compare run and show predicted against measured",
		Long: `validate simulates every configuration and load point of the tandem bench
compare reports in RESULT_DIR with the cost model (the calibration's factors,
or the hardware profile's priors) and prints each metric predicted against
measured with its relative error: TTFT, TPOT, ITL, E2E, output throughput and
the per-token split. Validate on a run the calibration did not see.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hw, cases, err := loadRuns(from, hardware)
			if err != nil {
				return err
			}
			eff := hw.Efficiency
			if calFile != "" {
				cal, err := costmodel.LoadCalibration(calFile)
				if err != nil {
					return fmt.Errorf("--calibration: %w", err)
				}
				if !strings.EqualFold(cal.Hardware, hw.Name) {
					return fmt.Errorf("--calibration %s was fitted on %s, not --hardware %s", calFile, cal.Hardware, hw.Name)
				}
				eff = cal.Efficiency
			}
			rows, sum, err := calibration.Validate(cases, hw, eff)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if jsonOut {
				for i := range rows {
					if math.IsNaN(rows[i].RelError) {
						rows[i].RelError = 0
					}
				}
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(map[string]any{"from": from, "hardware": hw.Name, "calibration": calFile, "efficiency": eff, "rows": rows, "summary": sum})
			}
			if err := calibration.WriteRows(w, rows); err != nil {
				return err
			}
			fmt.Fprintf(w, "\n|predicted − measured| / measured over the %d cases:\n\n", len(cases))
			return calibration.WriteFit(w, sum)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "a tandem bench compare result directory (or one report JSON)")
	fl.StringVar(&hardware, "hardware", "cpu", "the hardware profile the runs were measured on")
	fl.StringVar(&calFile, "calibration", "", "efficiency factors from tandem plan calibrate (default: the profile's priors)")
	fl.BoolVar(&jsonOut, "json", false, "print one JSON object")
	return cmd
}

// loadRuns checks --from and --hardware and reads the runs' cases.
func loadRuns(from, hardware string) (costmodel.Hardware, []calibration.Case, error) {
	if from == "" {
		return costmodel.Hardware{}, nil, fmt.Errorf("--from is required: a tandem bench compare result directory or report")
	}
	hw, err := costmodel.HardwareByName(hardware)
	if err != nil {
		return hw, nil, fmt.Errorf("--hardware: %w", err)
	}
	cases, err := calibration.LoadCases(from)
	if err != nil {
		return hw, nil, fmt.Errorf("--from %s: %w", from, err)
	}
	return hw, cases, nil
}

// dirOf is path when it is a directory, else its directory.
func dirOf(path string) string {
	if strings.HasSuffix(path, ".json") {
		return filepath.Dir(path)
	}
	return path
}
