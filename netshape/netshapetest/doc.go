// Package netshapetest holds the test helpers of netshape: tests that
// build networks call Require first (a skip without root or iproute2,
// a failure where RequireEnv is set, as CI sets it), and check with
// State, Owned, WaitGone, WaitNoLeftovers and WaitExited that the
// namespaces, links and processes they made are gone on every path out.
//
// It is for tests only: no package but a test imports it. It imports
// netshape and internal/proctest and nothing else of Tandem's.
package netshapetest
