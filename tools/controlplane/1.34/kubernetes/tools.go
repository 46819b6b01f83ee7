//go:build tools

// Package tools pins the control-plane commands in this module's build list: kube-apiserver and
// kube-controller-manager come from the same k8s.io/kubernetes release, so they share most packages
// (and most of the build).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
