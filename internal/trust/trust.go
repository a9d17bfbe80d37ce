// Package trust decides which events from other nodes count: those from trusted sources at
// once, the others once enough distinct sources have reported their IP address or number. It
// names a source by a plain string (a libp2p peer ID, an OpenDHT node ID), so every peer
// network shares one gate without linking the others.
package trust

import (
	"container/list"
	"slices"
	"sync"

	"github.com/dialtrap/dialtrap/internal/event"
)

// The bounds on held events when the Policy leaves them 0: docs/reference/peer-protocol.md
// states them.
const (
	DefaultMaxPending      = 20000
	DefaultMaxPendingBytes = 64 << 20
)

// Policy says which peer events count at once and which wait for confirmation.
type Policy struct {
	// Trusted sources' events count at once.
	Trusted []string
	// MinSightings is how many distinct sources must report the same IP address or number
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

// Gate applies a Policy: it passes events that count and holds the others until enough
// distinct sources have reported their IP address or number. It is safe for concurrent use.
type Gate struct {
	p       Policy
	trusted map[string]bool

	mu      sync.Mutex
	keys    map[string]*sightings // "ip:..." or "num:..."
	queue   *list.List            // of *held, oldest first
	bytes   int
	dropped uint64
	// recent keys that met the policy: what comes next for them passes while the store has
	// not written them yet (Known would still say no).
	passed *recentKeys
}

// sightings are the distinct sources that reported one key, and the events held for it.
type sightings struct {
	sources map[string]struct{}
	held    []*held
}

type held struct {
	e    *event.Event
	keys []string
	size int
	elem *list.Element // nil once released or dropped
}

const maxPassed = 4096

// New returns a gate applying p, its zero bounds replaced by the defaults.
func New(p Policy) *Gate {
	if p.MinSightings < 1 {
		p.MinSightings = 1
	}
	if p.MaxPending <= 0 {
		p.MaxPending = DefaultMaxPending
	}
	if p.MaxPendingBytes <= 0 {
		p.MaxPendingBytes = DefaultMaxPendingBytes
	}
	g := &Gate{p: p, trusted: map[string]bool{}, keys: map[string]*sightings{}, queue: list.New(),
		passed: newRecentKeys(maxPassed)}
	for _, s := range p.Trusted {
		g.trusted[s] = true
	}
	return g
}

// Trusted reports whether source's events count at once (Policy.Trusted).
func (g *Gate) Trusted(source string) bool { return g.trusted[source] }

// MinSightings is the policy's MinSightings, at least 1: /peers reports it.
func (g *Gate) MinSightings() int { return g.p.MinSightings }

// keysOf are the policy keys of an event: its source IP and, when it has one, its number.
func keysOf(e *event.Event) []string {
	k := []string{"ip:" + e.SourceIP}
	if e.CalledNumber != "" && e.CalledNumber != event.NotFound {
		k = append(k, "num:"+e.CalledNumber)
	}
	return k
}

// Admit takes a verified event vouched for by source (the peer that signed it, the node that
// created it) and returns the events that count now: none (it is held), the event itself, or
// it with others held for the same IP or number. It sets e.Peer to source and e.Trusted, so a
// released event still names its own source.
func (g *Gate) Admit(e *event.Event, source string) []*event.Event {
	e.Peer = source
	e.Trusted = g.trusted[source]
	if e.Trusted || g.p.MinSightings <= 1 {
		return []*event.Event{e}
	}
	keys := keysOf(e)
	g.mu.Lock()
	for _, k := range keys {
		if g.passed.has(k) {
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
	h := &held{e: e, keys: keys, size: len(e.Sealed) + len(e.SIPMessage) + len(e.SIPUserAgent) + len(e.CalledNumber) + 512}
	for _, k := range keys {
		s := g.keys[k]
		if s == nil {
			s = &sightings{sources: map[string]struct{}{}}
			g.keys[k] = s
		}
		s.sources[source] = struct{}{}
		s.held = append(s.held, h)
	}
	var out []*event.Event
	for _, k := range keys {
		// A key may be gone: releasing the other key forgot this event, and with it a key
		// that held nothing else.
		if s := g.keys[k]; s != nil && len(s.sources) >= g.p.MinSightings {
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
func (g *Gate) release(k string, s *sightings) []*event.Event {
	hs := slices.Clone(s.held) // forget edits s.held
	out := make([]*event.Event, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.e)
		g.forget(h)
	}
	delete(g.keys, k)
	if !g.passed.has(k) {
		g.passed.add(k)
	}
	return out
}

// forget takes h out of the queue and out of its keys' lists; a key left with no held
// events is forgotten, sources and all, so memory stays bounded by the held events.
func (g *Gate) forget(h *held) {
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

// Pending returns how many events are held, and how many were dropped for room.
func (g *Gate) Pending() (held int, dropped uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.queue.Len(), g.dropped
}

// recentKeys is a set that forgets its oldest key once it holds size keys.
type recentKeys struct {
	m    map[string]struct{}
	ring []string // insertion order, for eviction
	pos  int
}

func newRecentKeys(size int) *recentKeys {
	return &recentKeys{m: make(map[string]struct{}, size), ring: make([]string, size)}
}

func (r *recentKeys) has(k string) bool {
	_, ok := r.m[k]
	return ok
}

// add adds k, which must not be there yet.
func (r *recentKeys) add(k string) {
	if old := r.ring[r.pos]; old != "" {
		delete(r.m, old)
	}
	r.ring[r.pos] = k
	r.pos = (r.pos + 1) % len(r.ring)
	r.m[k] = struct{}{}
}
