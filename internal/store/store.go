// Package store defines what every event store offers: batched writes of raw events with the
// per-IP and per-number aggregates the API serves, kept up to date on write so that lookups
// never scan the events table. Backends live in store/sqlite and store/postgres.
package store

import (
	"context"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Aggregate summarises every sighting of one IP address or one called number.
type Aggregate struct {
	Key       string // the IP address or the number
	FirstSeen string // event_timestamp layout
	LastSeen  string
	Count     int64
}

// Store keeps events. Write is called by a single hub worker; the readers are safe for
// concurrent use alongside it.
type Store interface {
	// Name identifies the store in logs and metrics (it makes a Store a hub sink).
	Name() string
	// Write stores a batch atomically. Events whose event_uuid is already stored are skipped,
	// so a retried or re-imported batch never counts twice.
	Write(ctx context.Context, batch []*event.Event) error
	// IP and Number return the aggregate for one key; ok is false when it was never seen.
	IP(ctx context.Context, ip string) (a Aggregate, ok bool, err error)
	Number(ctx context.Context, number string) (a Aggregate, ok bool, err error)
	// CountEvents returns how many raw events are stored.
	CountEvents(ctx context.Context) (int64, error)
	// Events calls fn for every stored event, oldest first, until fn returns an error.
	Events(ctx context.Context, fn func(*event.Event) error) error
	Close() error
}

// CountsAsNumber reports whether a called number belongs in the numbers aggregate: the
// NOT_FOUND placeholder and the empty number of unparseable packets do not.
func CountsAsNumber(n string) bool {
	return n != "" && n != event.NotFound
}
