//go:build opendht

package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/config"
)

// OpenDHT and libp2p both default to port 4222: with -p, the bridge must move, and the
// node says so before it opens anything.
func TestOpenDHTPortClashWithP2P(t *testing.T) {
	cfg, err := config.Load([]string{"-p", "--opendht", "--data-dir", t.TempDir()}, func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	err = CheckOpenDHT(cfg)
	if !errors.As(err, new(ConfigError)) || !strings.Contains(err.Error(), "--opendht-addr :4223") {
		t.Fatalf("CheckOpenDHT: %v", err)
	}
	cfg.OpenDHTAddr = ":4223"
	if err := CheckOpenDHT(cfg); err != nil {
		t.Fatalf("a port of its own: %v", err)
	}
}
