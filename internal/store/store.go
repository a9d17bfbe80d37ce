// Package store holds the value types every event store shares: the per-IP and per-number
// aggregates the API serves (kept up to date on write, so that lookups never scan the events
// table), list options, counted dimensions. What a store must do is declared by each consumer
// (hub.Sink to write, api.Store to look up and list, peer.EventSource for catch-up, the export
// and import interfaces of cmd/dialtrap); backends live in store/sqlite and, next,
// store/postgres.
package store

import (
	"errors"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// ErrBusy says the store cannot take a request now for want of a resource others hold (the
// connections long lists are read through): the caller may try again shortly.
var ErrBusy = errors.New("store busy: try again shortly")

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
	// Verified counts sightings whose source address was proven (event.SourceVerified), from
	// anywhere; VerifiedLocal those this node captured, VerifiedTrusted those from peers
	// trusted when they reported them.
	Verified        int64
	VerifiedLocal   int64
	VerifiedTrusted int64
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
	// Tools counts events by the tool their shape names ("unknown" for none), SpoofedTools
	// only those whose User-Agent named another.
	Tools
	SpoofedTools
	// Countries counts events by their source's country (ISO 3166 alpha-2, ZZ unknown).
	Countries
	// Prefixes counts events with a number by its dial-out prefix ("none" for none).
	Prefixes
	// Numbers counts events by called number (NOT_FOUND and empty ones are left out).
	Numbers
	// Payloads counts attack payloads as "kind@where" (sqli@to).
	Payloads
	// TargetCountries counts events with a number by the country of its target.
	TargetCountries
)

// Values standing in for an empty one in the counts.
const (
	UnknownTool = "unknown"
	NoPrefix    = "none"
)

// Target summarises every call to one target number, whatever prefix it was dialled behind.
type Target struct {
	Target    string // E.164 when the numbering plan knows it, else the digits dialled
	Country   string
	Type      string
	FirstSeen string
	LastSeen  string
	Count     int64
	Dialled   int64 // distinct dialled strings that reached it
}

// TargetOptions select part of the target list, most called first.
type TargetOptions struct {
	Since      string // last seen at or after this event_timestamp
	FirstSince string // first seen at or after this event_timestamp: "fresh" targets
	Limit      int
	Offset     int
}

// Campaign is a run of events from one source by one tool without a pause longer than
// CampaignGap.
type Campaign struct {
	ID        int64
	SourceIP  string
	Country   string
	Tool      string
	UserAgent string // of its first event
	FirstSeen string
	LastSeen  string
	Count     int64
}

// CampaignGap is the longest pause inside one campaign: a scanner that comes back after
// more than this starts a new one.
const CampaignGap = 30 * time.Minute

// TimeCount is how many events fell in one time bucket.
type TimeCount struct {
	Time  string // start of the bucket, event_timestamp layout
	Count int64
}

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

// Source selects whose sightings a blocklist feed counts.
type Source int

// Feed sources.
const (
	SourceTrusted Source = iota // this node's own and those of trusted peers (the default)
	SourceLocal                 // this node's own only
	SourceAll                   // any peer's too
)

// FeedFilter selects the keys of a blocklist feed.
type FeedFilter struct {
	Since    string // last seen at or after this event_timestamp ("" for any)
	Until    string // last seen at or before this event_timestamp ("" for any)
	MinCount int64  // seen at least this often
	// Verified keeps only keys with a sighting whose source address was proven, from the
	// selected sources (a peer's claim counts only as far as the peer is selected).
	Verified bool
	Source   Source
	// KeysOnly reads only Key, LastSeen and Seq of each item (what blocklist scripts and the
	// change stream need): a third of the work of reading every column.
	KeysOnly bool
}

// FeedOrder is the order feed pages are read in; each has its own cursor (FeedItem fields).
type FeedOrder int

// Feed orders.
const (
	ByKey      FeedOrder = iota // Key
	BySeq                       // Seq, then Key: the order of changes
	ByLastSeen                  // LastSeen, then Key: the order of expiry
)

// FeedItem is one key of a feed page.
type FeedItem struct {
	Key      string
	LastSeen string
	Count    int64
	Verified int64 // verified sightings from anywhere
	// Seq is the change sequence of the write that last touched the key: it only grows.
	Seq int64
}

// NumberInfo is what a dialled string says about the call a scanner tried to make (see
// internal/numberintel): the dial-out prefix ("" for none), the target behind it (E.164 when
// the numbering plan knows it), the target's country and type (premium-rate, mobile...).
type NumberInfo struct {
	Prefix, Target, Country, Type string
}

// Labeler derives what the statistics count that an event does not carry itself: the
// country of its source and the target of its number. The store calls it as it writes, off
// the capture path; it must be safe for concurrent use.
type Labeler interface {
	Country(ip string) string
	Number(n string) NumberInfo
}
