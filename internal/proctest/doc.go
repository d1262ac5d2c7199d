// Package proctest reads Linux's /proc for tests that check which
// processes run: whether one has exited, which children one has. A
// zombie (exited, not yet reaped by a parent that is not the test) counts
// as exited. Require skips a test where /proc is missing.
//
// It is for tests only: only tests and test helpers (netshapetest)
// import it. It imports nothing of Tandem's, so that any package's tests
// can use it.
package proctest
