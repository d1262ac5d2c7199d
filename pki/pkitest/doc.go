// Package pkitest makes the certificates of tests: a cluster CA in a
// temporary directory with certificates it signed, and the TLS
// configurations a process holding one of them uses (package pki).
//
// It is for tests only: no program imports it, and it imports nothing of
// Tandem's but pki.
package pkitest
