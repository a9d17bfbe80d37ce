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
	// Where it was seen: events captured by this node, distinct peers whose events about it
	// are stored, and how many of those peers were trusted (--p2p-trust) when they reported it.
	Local        int64
	Peers        int64
	TrustedPeers int64
}

// Cursor is a position in the time-ordered event sequence that catch-up pages through.
type Cursor struct {
	Timestamp string // event_timestamp
	ID        int64  // the store's own tie-breaker among equal timestamps
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
	// MatchNumbers returns the stored numbers that match n under the national match
	// (event.NumbersMatch), n itself included when stored, newest first.
	MatchNumbers(ctx context.Context, n string) ([]Aggregate, error)
	// Count returns how many IPs or numbers were last seen at or after since ("" for all).
	Count(ctx context.Context, l List, since string) (int64, error)
	// Each calls fn for the IPs or numbers selected by o, newest first (last seen, then key,
	// both descending), streaming from the store, until fn returns an error.
	Each(ctx context.Context, l List, o ListOptions, fn func(Aggregate) error) error
	// Top returns the most frequent values of a dimension in events from the hour of since
	// ("" for all time) on, most frequent first, at most limit of them (0 for all), and how
	// many distinct values there are.
	Top(ctx context.Context, d Dimension, since string, limit int) (top []ValueCount, distinct int64, err error)
	// CountEvents returns how many raw events are stored.
	CountEvents(ctx context.Context) (int64, error)
	// Events calls fn for every stored event, oldest first, until fn returns an error.
	Events(ctx context.Context, fn func(*event.Event) error) error
	// Recent calls fn for at most limit events after c in (event_timestamp, store order), with
	// their Peer and Sealed fields, and each one's cursor: what a peer catching up is served.
	Recent(ctx context.Context, after Cursor, limit int, fn func(*event.Event, Cursor) error) error
	Close() error
}

// List names one of the per-key aggregate lists.
type List int

// The aggregate lists.
const (
	IPAddresses List = iota
	CalledNumbers
)

// ListOptions select part of a list. The zero value selects all of it.
type ListOptions struct {
	Since  string // only keys last seen at or after this event_timestamp
	Limit  int    // at most this many (0: no limit)
	Offset int    // skip this many first
}

// Dimension names an event field the store counts per hour for statistics.
type Dimension int

// The counted dimensions.
const (
	SIPMethods Dimension = iota
	UserAgents
	Transports
)

// ValueCount is how many events carried one value of a dimension.
type ValueCount struct {
	Value string
	Count int64
}

// MaxCountedValue is the longest value stored per dimension: user agents carry attack payloads
// of any length, and statistics do not need more than this to tell them apart.
const MaxCountedValue = 256

// HourOf returns the hour bucket ("YYYY-MM-DD HH") of an event_timestamp, the granularity of
// the dimension counts.
func HourOf(ts string) string {
	if len(ts) < 13 {
		return ts
	}
	return ts[:13]
}

// CountsAsNumber reports whether a called number belongs in the numbers aggregate: the
// NOT_FOUND placeholder and the empty number of unparseable packets do not.
func CountsAsNumber(n string) bool {
	return n != "" && n != event.NotFound
}
