package node

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/storespool"
)

type nullSink struct{}

func (nullSink) Name() string                                { return "postgres" }
func (nullSink) Write(context.Context, []*event.Event) error { return nil }

// The store is spooled when it is a database across the network, not when it is a local file.
func TestStoreSpooledOnlyForPostgres(t *testing.T) {
	for _, c := range []struct {
		store string
		want  bool
	}{
		{"sqlite", false},
		{"postgres://dialtrap@db.example.net/dialtrap", true},
		{"postgresql://db.example.net/dialtrap?sslmode=require", true},
	} {
		t.Run(c.store, func(t *testing.T) {
			cfg := config.Config{Store: c.store, DataDir: t.TempDir(), StoreSpoolMax: 16 << 20}
			n := &Node{cfg: cfg, log: slog.New(slog.DiscardHandler)}
			defer n.Close(context.Background())
			if SpoolsStore(&cfg) != c.want {
				t.Fatalf("SpoolsStore = %v, want %v", !c.want, c.want)
			}
			s, err := n.spoolStore(context.Background(), nullSink{})
			if err != nil {
				t.Fatal(err)
			}
			_, spooled := s.(*storespool.Sink)
			_, statErr := os.Stat(filepath.Join(cfg.DataDir, StoreSpoolDir))
			if spooled != c.want || (statErr == nil) != c.want || (n.storeSpool != nil) != c.want {
				t.Fatalf("spooled %v, directory %v, metrics source %v; want all %v", spooled, statErr, n.storeSpool != nil, c.want)
			}
			if s.Name() != "postgres" {
				t.Errorf("sink name %q: the hub and /metrics know the store by its own name", s.Name())
			}
			if c.want && n.metricSources().StoreSpool == nil {
				t.Error("no store spool metrics")
			}
			if _, ok := n.StoreSpool(); ok != c.want {
				t.Errorf("StoreSpool() ok = %v", ok)
			}
		})
	}
}
