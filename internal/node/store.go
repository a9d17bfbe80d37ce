package node

import (
	"context"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/peerinfo"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/postgres"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// Store is what a node uses of its event store: the hub's sink, the API's lookups, lists,
// statistics, analytics and feeds, peers' catch-up, and retention. --store picks the
// backend: the SQLite file of the data directory, or a PostgreSQL database several nodes
// share.
type Store interface {
	hub.Sink
	api.Store
	api.Analytics
	feed.StreamSource
	peerinfo.EventSource
	SetLabeler(store.Labeler)
	PruneEvents(ctx context.Context, before string, limit int) (int64, error)
	Close() error
}

var (
	_ Store = (*sqlite.Store)(nil)
	_ Store = (*postgres.Store)(nil)
)

// openStore opens the store --store names.
func (n *Node) openStore(ctx context.Context) (Store, error) {
	if postgres.IsURL(n.cfg.Store) {
		s, err := postgres.Open(ctx, n.cfg.Store)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	if have, want, err := sqlite.SchemaVersion(ctx, n.cfg.DBFile); err == nil && have > 0 && have < want {
		// A migration can take a while on a large store (12 s for a million numbers on 2
		// cores); say why the node is not listening yet.
		n.log.Log(ctx, LevelNotice, "upgrading the database schema; the node starts when it is done",
			"db", n.cfg.DBFile, "from", have, "to", want)
	}
	s, err := sqlite.Open(ctx, n.cfg.DBFile)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// storeName is where the node keeps its events, for the start-up line: the SQLite file, or
// the PostgreSQL URL without its password.
func (n *Node) storeName() string {
	if postgres.IsURL(n.cfg.Store) {
		return config.RedactURL(n.cfg.Store)
	}
	return n.cfg.DBFile
}
