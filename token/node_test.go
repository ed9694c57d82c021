package token

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestHelperUnderNode runs testdata/edgewise_test.mjs (fake fetch, fake
// Device) against the embedded helper with node's test runner: timeouts,
// backoff and option handling that the browser test does not reach.
func TestHelperUnderNode(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node not installed")
	}
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "edgewise_test.mjs"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"edgewise.mjs": sdkJS, "edgewise_test.mjs": src} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "edgewise_test.mjs")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}
