package main

import (
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tandemllm/tandem/calibration"
	"github.com/tandemllm/tandem/costmodel"
)

func newPlanCalibrateCmd() *cobra.Command {
	var from, hardware, out string
	var sweeps int
	var background string
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
			fo := calibration.FitOptions{Sweeps: sweeps,
				Progress: func(s int, obj float64) { fmt.Fprintf(errw, "calibrate: sweep %d, loss %.4g\n", s, obj) }}
			if fo.BackgroundLoad, err = setBackground(cases, background); err != nil {
				return err
			}
			cal, err := calibration.Fit(cmd.Context(), cases, hw, fo)
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
	fl.StringVar(&background, "background-load", "", backgroundLoadHelp+" (default: fitted)")
	return cmd
}

const backgroundLoadHelp = "shared CPU: other work's runnable threads while the runs ran, each weighted by its CPU share against the clusters' (a nice-0 thread counts 1024/9548 = 0.107 against clusters at nice -10): one number, or REPORT.json=N,... per report"

// setBackground reads --background-load: one number for every case
// (returned), or REPORT=N pairs giving each report's cases their own.
func setBackground(cases []calibration.Case, spec string) (*float64, error) {
	if spec == "" {
		return nil, nil
	}
	parse := func(v string) (float64, error) {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || !(x >= 0) || math.IsInf(x, 0) {
			return 0, fmt.Errorf("--background-load %q: want 0 or more threads", v)
		}
		return x, nil
	}
	if !strings.Contains(spec, "=") {
		x, err := parse(spec)
		return &x, err
	}
	for _, kv := range strings.Split(spec, ",") {
		name, v, _ := strings.Cut(kv, "=")
		x, err := parse(v)
		if err != nil {
			return nil, err
		}
		found := false
		for i := range cases {
			if filepath.Base(cases[i].Source) == filepath.Base(name) {
				cases[i].BackgroundLoad, found = &x, true
			}
		}
		if !found {
			return nil, fmt.Errorf("--background-load %s: no report of that name in --from", name)
		}
	}
	return nil, nil
}

func newPlanValidateCmd() *cobra.Command {
	var from, hardware, calFile string
	var jsonOut bool
	var background string
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
			all, err := setBackground(cases, background)
			if err != nil {
				return err
			}
			if all != nil {
				eff.BackgroundLoad = *all
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
	fl.StringVar(&background, "background-load", "", backgroundLoadHelp+" (default: the calibration's)")
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
