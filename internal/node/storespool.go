package node

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/metrics"
	"github.com/dialtrap/dialtrap/internal/storespool"
)

// StoreSpoolDir is the store spool's directory in --data-dir.
const StoreSpoolDir = "store-spool"

// SpoolsStore reports whether the store's writes go through a disk spool: a database across
// the network (PostgreSQL) can go away for a while, and capture must not lose what arrives
// meanwhile. An SQLite file is on the same disk the spool would be: nothing to gain.
func SpoolsStore(cfg *config.Config) bool {
	return strings.HasPrefix(cfg.Store, "postgres://") || strings.HasPrefix(cfg.Store, "postgresql://")
}

// spoolStore wraps the store's sink in the disk spool when SpoolsStore says so, and returns
// s itself otherwise. Its Close runs after the hub's (registered before it), which drains
// into it, and before the store's.
func (n *Node) spoolStore(ctx context.Context, s hub.Sink) (hub.Sink, error) {
	if !SpoolsStore(&n.cfg) {
		return s, nil
	}
	sp, err := storespool.New(s, storespool.Config{
		Dir: filepath.Join(n.cfg.DataDir, StoreSpoolDir), MaxBytes: n.cfg.StoreSpoolMax,
		MaxBatch: 5000, MaxBatchBytes: 8 << 20, // replayed as the hub writes: see its store queue
		Log: n.log,
	})
	if err != nil {
		return nil, err
	}
	n.onClose("store spool", 5*time.Second, sp.Close)
	// The replay runs until Close, as the node's other background work: ctx only bounds Start.
	if err := sp.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, err
	}
	n.storeSpool = sp
	return sp, nil
}

// storeSpoolMetrics reads the store spool's counters for /metrics.
func (n *Node) storeSpoolMetrics() metrics.StoreSpool {
	st := n.storeSpool.Stats()
	return metrics.StoreSpool{Spooling: st.Spooling, Events: st.Pending, Bytes: st.Bytes, Spooled: st.Spooled,
		Replayed: st.Replayed, FullRefusals: st.FullRefusals, Refused: st.Refused, Corrupt: st.Corrupt,
		Torn: st.Torn, Failures: st.Failures}
}

// StoreSpool returns the store spool's counters; ok is false when the store is not spooled.
// A test waits on it for a node to have written its spool out (Pending 0, not Spooling).
func (n *Node) StoreSpool() (st storespool.Stats, ok bool) {
	if n.storeSpool == nil {
		return st, false
	}
	return n.storeSpool.Stats(), true
}
