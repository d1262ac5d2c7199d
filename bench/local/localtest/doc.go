// Package localtest helps the end-to-end tests of the bench packages: it
// builds the tandem binary once per test process and finds processes a
// test left running.
//
// It is for tests only; it imports the generated proto package alone of
// Tandem's.
package localtest
