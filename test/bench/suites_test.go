package main

import (
	"go/build"
	"path/filepath"
	"testing"
)

// TestSuiteProgramsExist: the programs the relay and WebRTC suites `go run`
// are main packages where the suites look for them (a package move once left
// both pointing at folders that no longer existed).
func TestSuiteProgramsExist(t *testing.T) {
	root := filepath.Join("..", "..")
	for _, pkg := range []string{relayBenchPkg, webrtcBenchPkg} {
		p, err := build.ImportDir(filepath.Join(root, pkg), 0)
		if err != nil {
			t.Errorf("%s: %v", pkg, err)
			continue
		}
		if p.Name != "main" {
			t.Errorf("%s is package %s, not a program", pkg, p.Name)
		}
	}
}
