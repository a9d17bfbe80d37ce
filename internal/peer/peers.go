package peer

import (
	"crypto/sha256"
	"slices"
	"strings"
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/peerinfo"
)

// recent is a map that forgets its oldest key once it holds size keys.
type recent[V any] struct {
	m    map[string]V
	ring []string // insertion order, for eviction
	pos  int
}

func newRecent[V any](size int) *recent[V] {
	return &recent[V]{m: make(map[string]V, size), ring: make([]string, size)}
}

func (r *recent[V]) get(k string) (V, bool) {
	v, ok := r.m[k]
	return v, ok
}

// put adds k, which must not be there yet.
func (r *recent[V]) put(k string, v V) {
	if old := r.ring[r.pos]; old != "" {
		delete(r.m, old)
	}
	r.ring[r.pos] = k
	r.pos = (r.pos + 1) % len(r.ring)
	r.m[k] = v
}

// seenEvents remembers the content hash of recent event_uuids, so that an event delivered
// twice (gossip, then catch-up) is dropped, and one re-sent with other content is caught.
type seenEvents struct {
	mu sync.Mutex
	r  *recent[[sha256.Size]byte]
}

func newSeenEvents(size int) *seenEvents {
	return &seenEvents{r: newRecent[[sha256.Size]byte](size)}
}

// add records id with data's hash; it returns a duplicate or conflict rejection when id was
// recorded before.
func (s *seenEvents) add(id string, data []byte) error {
	sum := sha256.Sum256(data)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.r.get(id); ok {
		if old == sum {
			return reject(ReasonDuplicate, "event %s received before", id)
		}
		return reject(ReasonConflict, "event %s received before with other content", id)
	}
	s.r.put(id, sum)
	return nil
}

// peerCounters are what one neighbour delivered to this node.
type peerCounters struct {
	received uint64 // passed the checks (gossip or catch-up)
	rejected uint64 // refused (signature, schema, time, rate, conflict)
	caughtUp uint64 // received through catch-up from it
	bad      uint64 // refused items it served in catch-up: lowers its gossip score
}

// peerTable counts per neighbour. It forgets disconnected peers when it grows large, so a
// stream of fresh identities cannot grow it without bound.
type peerTable struct {
	mu sync.Mutex
	m  map[libpeer.ID]*peerCounters
}

const maxPeerCounters = 4096

func (t *peerTable) count(p libpeer.ID, f func(*peerCounters)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[p]
	if c == nil {
		if len(t.m) >= maxPeerCounters {
			clear(t.m)
		}
		c = &peerCounters{}
		t.m[p] = c
	}
	f(c)
}

func (t *peerTable) get(p libpeer.ID) peerCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.m[p]; c != nil {
		return *c
	}
	return peerCounters{}
}

// appScore is gossipsub's application-specific score of p: each item of a catch-up answer
// that failed the checks costs as much as an invalid gossip message.
func (n *Node) appScore(p libpeer.ID) float64 {
	return -100 * float64(n.peers.get(p).bad)
}

// PeerInfo describes one connected peer (declared in peerinfo, which builds without libp2p).
type PeerInfo = peerinfo.PeerInfo

// Report is what /peers and `dialtrap peers` show (declared in peerinfo).
type Report = peerinfo.Report

// Report returns the node's view of its peers, sorted by peer ID.
func (n *Node) Report() Report {
	st := n.Stats()
	held, dropped := n.gate.Pending()
	r := Report{ID: n.self.String(), Addrs: n.Addrs(), Published: st.Published, Received: st.Received,
		Rejected: st.Rejected, Dropped: st.Dropped, Pending: held, PendingDropped: dropped, MinSightings: n.gate.MinSightings(),
		Peers: []PeerInfo{}}
	topic := map[libpeer.ID]bool{}
	for _, p := range n.TopicPeers() {
		topic[p] = true
	}
	for _, p := range n.host.Network().Peers() {
		id := p.String()
		info := PeerInfo{ID: id, Addrs: []string{}, Topic: topic[p], Trusted: n.gate.Trusted(id), Score: n.Score(p)}
		for _, c := range n.host.Network().ConnsToPeer(p) {
			info.Addrs = append(info.Addrs, c.RemoteMultiaddr().String())
			info.Direction = "outbound"
			if c.Stat().Direction == network.DirInbound {
				info.Direction = "inbound"
			}
		}
		c := n.peers.get(p)
		info.Received, info.Rejected, info.CaughtUp = c.received, c.rejected, c.caughtUp
		r.Peers = append(r.Peers, info)
	}
	slices.SortFunc(r.Peers, func(a, b PeerInfo) int { return strings.Compare(a.ID, b.ID) })
	r.PeersTotal = len(r.Peers)
	return r
}
