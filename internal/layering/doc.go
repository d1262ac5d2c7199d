// Package layering holds the test that keeps Tandem's imports pointing the
// way docs/architecture.md says: it reads the package table there (the one
// place the allowed imports are written down) and checks every package of
// the module against it with `go list`. A package missing from the table,
// a row naming a package that no longer exists, or an import the table
// does not allow fails the test, naming the package and what to change.
//
// It has no code of its own to import, and must never be imported.
package layering
