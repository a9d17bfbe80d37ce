// Package peerinfo holds the parts of peer-to-peer sharing that the rest of dialtrap sees
// without linking libp2p: the report that /peers serves and `dialtrap peers` prints, and the
// store's side of catch-up. internal/peer (libp2p) fills them in; a binary built with
// -tags nop2p imports only this package, so `dialtrap peers` still reads another node's
// report and the store still satisfies catch-up's interface.
package peerinfo

import (
	"context"

	"github.com/dialtrap/dialtrap/internal/event"
)

// EventSource is what catch-up serves from: the store.
type EventSource interface {
	// Recent calls fn for at most limit stored events after (since, afterID) in time order,
	// each with its cursor ID. Events from peers must carry Peer and Sealed.
	Recent(ctx context.Context, since string, afterID int64, limit int, fn func(e *event.Event, id int64) error) error
}

// PeerInfo describes one connected peer.
type PeerInfo struct {
	ID        string   `json:"peer_id"`
	Addrs     []string `json:"addresses"`
	Topic     bool     `json:"in_topic"` // exchanges events with this node now
	Trusted   bool     `json:"trusted"`
	Received  uint64   `json:"events_received"`
	Rejected  uint64   `json:"events_rejected"`
	CaughtUp  uint64   `json:"events_caught_up"`
	Score     float64  `json:"score"`
	Direction string   `json:"direction"` // inbound or outbound
}

// Report is what /peers and `dialtrap peers` show.
type Report struct {
	ID             string            `json:"peer_id"`
	Addrs          []string          `json:"addresses"`
	PeersTotal     int               `json:"peers_total"`
	Peers          []PeerInfo        `json:"peers"`
	Published      uint64            `json:"events_published"`
	Received       uint64            `json:"events_received"`
	Rejected       map[string]uint64 `json:"events_rejected"`
	Dropped        map[string]uint64 `json:"messages_dropped"`
	Pending        int               `json:"events_pending"`
	PendingDropped uint64            `json:"events_pending_dropped"`
	MinSightings   int               `json:"min_sightings"`
	// OpenDHT is the bridge to the reference product's network (--opendht); nil when off.
	OpenDHT *OpenDHT `json:"opendht,omitempty"`
}

// OpenDHT is what the OpenDHT bridge reports: its node in that network, the values it
// received under the shared key and what became of them, and what it published.
type OpenDHT struct {
	NodeID         string            `json:"node_id"`
	Port           int               `json:"port"`
	Key            string            `json:"key"`
	KeyHash        string            `json:"key_hash"`
	Nodes          int               `json:"routing_table_nodes"`
	Received       uint64            `json:"values_received"`
	Accepted       uint64            `json:"events_accepted"`
	Refused        map[string]uint64 `json:"values_refused"`
	Publish        bool              `json:"publish"`
	Relay          bool              `json:"relay"`
	Published      uint64            `json:"events_published"`
	PutsConfirmed  uint64            `json:"puts_confirmed"`
	PutsFailed     uint64            `json:"puts_failed"`
	Pending        int               `json:"events_pending"`
	PendingDropped uint64            `json:"events_pending_dropped"`
	MinSightings   int               `json:"min_sightings"`
}

// TopicPeers counts the peers that exchange events with this node now.
func (r Report) TopicPeers() int {
	n := 0
	for _, p := range r.Peers {
		if p.Topic {
			n++
		}
	}
	return n
}
