package peer

import (
	"container/list"
	"slices"
	"sync"

	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Policy says which peer events count at once and which wait for confirmation.
type Policy struct {
	// Trusted peers' events count at once.
	Trusted []libpeer.ID
	// MinSightings is how many distinct peers must report the same IP address or number
	// before events about it count; 1 (the default) accepts every verified event.
	MinSightings int
	// Known reports whether this node already holds the IP address or the number (it saw it
	// itself, or it met the policy before): events about it count at once.
	Known func(ip, number string) bool
	// MaxPending and MaxPendingBytes bound the events held while they wait; beyond them the
	// oldest are dropped. Defaults 20,000 events and 64 MiB.
	MaxPending      int
	MaxPendingBytes int
}

// gate applies a Policy: it passes events that count and holds the others until enough
// distinct peers have reported their IP address or number.
type gate struct {
	p       Policy
	trusted map[libpeer.ID]bool

	mu      sync.Mutex
	keys    map[string]*sightings // "ip:..." or "num:..."
	queue   *list.List            // of *held, oldest first
	bytes   int
	dropped uint64
	// recent keys that met the policy: what comes next for them passes while the store has
	// not written them yet (Known would still say no).
	passed *recent[struct{}]
}

// sightings are the distinct peers that reported one key, and the events held for it.
type sightings struct {
	peers map[libpeer.ID]struct{}
	held  []*held
}

type held struct {
	e    *event.Event
	keys []string
	size int
	elem *list.Element // nil once released or dropped
}

const maxPassed = 4096

func newGate(p Policy) *gate {
	if p.MinSightings < 1 {
		p.MinSightings = 1
	}
	if p.MaxPending <= 0 {
		p.MaxPending = 20000
	}
	if p.MaxPendingBytes <= 0 {
		p.MaxPendingBytes = 64 << 20
	}
	g := &gate{p: p, trusted: map[libpeer.ID]bool{}, keys: map[string]*sightings{}, queue: list.New(),
		passed: newRecent[struct{}](maxPassed)}
	for _, id := range p.Trusted {
		g.trusted[id] = true
	}
	return g
}

// keysOf are the policy keys of an event: its source IP and, when it has one, its number.
func keysOf(e *event.Event) []string {
	k := []string{"ip:" + e.SourceIP}
	if e.CalledNumber != "" && e.CalledNumber != event.NotFound {
		k = append(k, "num:"+e.CalledNumber)
	}
	return k
}

// admit takes a verified event signed by signer and returns the events that count now: none
// (it is held), the event itself, or it with others held for the same IP or number.
func (g *gate) admit(e *event.Event, signer libpeer.ID) []*event.Event {
	e.Peer = signer.String()
	e.Trusted = g.trusted[signer]
	if e.Trusted || g.p.MinSightings <= 1 {
		return []*event.Event{e}
	}
	keys := keysOf(e)
	g.mu.Lock()
	for _, k := range keys {
		if _, ok := g.passed.get(k); ok {
			g.mu.Unlock()
			return []*event.Event{e}
		}
	}
	g.mu.Unlock()
	if g.p.Known != nil {
		num := ""
		if len(keys) > 1 {
			num = e.CalledNumber
		}
		if g.p.Known(e.SourceIP, num) {
			return []*event.Event{e}
		}
	}

	g.mu.Lock()
	defer g.mu.Unlock()
	h := &held{e: e, keys: keys, size: len(e.Sealed) + len(e.SIPMessage) + 512}
	for _, k := range keys {
		s := g.keys[k]
		if s == nil {
			s = &sightings{peers: map[libpeer.ID]struct{}{}}
			g.keys[k] = s
		}
		s.peers[signer] = struct{}{}
		s.held = append(s.held, h)
	}
	var out []*event.Event
	for _, k := range keys {
		// A key may be gone: releasing the other key forgot this event, and with it a key
		// that held nothing else.
		if s := g.keys[k]; s != nil && len(s.peers) >= g.p.MinSightings {
			out = append(out, g.release(k, s)...)
		}
	}
	if len(out) > 0 {
		return out
	}
	h.elem = g.queue.PushBack(h)
	g.bytes += h.size
	for g.queue.Len() > g.p.MaxPending || g.bytes > g.p.MaxPendingBytes {
		old := g.queue.Front().Value.(*held)
		g.forget(old)
		g.dropped++
	}
	return nil
}

// release lets every event held for key k through, and remembers that k passed.
func (g *gate) release(k string, s *sightings) []*event.Event {
	hs := slices.Clone(s.held) // forget edits s.held
	out := make([]*event.Event, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.e)
		g.forget(h)
	}
	delete(g.keys, k)
	if _, ok := g.passed.get(k); !ok {
		g.passed.put(k, struct{}{})
	}
	return out
}

// forget takes h out of the queue and out of its keys' lists; a key left with no held
// events is forgotten, peers and all, so memory stays bounded by the held events.
func (g *gate) forget(h *held) {
	if h.elem != nil {
		g.queue.Remove(h.elem)
		g.bytes -= h.size
		h.elem = nil
	}
	h.size = -1
	for _, k := range h.keys {
		s := g.keys[k]
		if s == nil {
			continue
		}
		live := s.held[:0]
		for _, o := range s.held {
			if o != h && o.size >= 0 {
				live = append(live, o)
			}
		}
		clear(s.held[len(live):])
		s.held = live
		if len(live) == 0 {
			delete(g.keys, k)
		}
	}
}

// pending returns how many events are held, and how many were dropped for room.
func (g *gate) pending() (held int, dropped uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.queue.Len(), g.dropped
}
