package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/config"
)

// A token file without a token must not start an API without one.
func TestEmptyTokenFileIsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("# nobody yet\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: config.Config{APITokenFile: p}}
	if ts, err := n.readTokens(); err == nil || !strings.Contains(err.Error(), "holds no token") {
		t.Fatalf("readTokens of an empty file: %v, %v", ts, err)
	}
}
