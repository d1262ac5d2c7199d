// Package tracing is Tandem's per-token flight recorder.
package tracing
