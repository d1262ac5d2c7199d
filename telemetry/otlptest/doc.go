// Package otlptest is an OTLP/gRPC trace receiver for tests: it serves the
// protocol's own TraceService on a 127.0.0.1 listener, so a process's real
// exporter can be pointed at it, and keeps every span it receives, flattened
// with its resource, for assertions.
package otlptest
