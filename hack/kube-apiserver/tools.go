//go:build tools

// Package tools records the kube-apiserver command as this module's one
// dependency, so go.mod and go.sum pin it.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
