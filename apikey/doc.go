// Package apikey provides the API keys a public API accepts: keys given
// on the command line and keys read from a file (one a line; blank lines
// and lines starting with # are skipped), the file read again on
// [Set.Reload] (what a SIGHUP does), and a check of a presented key that
// takes the same time whichever key, if any, it matches.
//
// Only SHA-256 digests of the keys are kept in memory, and no method
// returns or formats a key, so a key cannot reach a log, a trace or a
// metric label through a Set.
//
// PerRPC gives a gRPC client the same credential. It imports no Tandem
// package.
package apikey
