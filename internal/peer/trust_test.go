package peer

import (
	"fmt"
	"slices"
	"testing"

	libpeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/dialtrap/dialtrap/internal/event"
)

func sighting(i int, ip, number string) *event.Event {
	return &event.Event{UUID: fmt.Sprint("u", i), SourceIP: ip, CalledNumber: number, FromPeer: true}
}

func uuids(es []*event.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.UUID)
	}
	slices.Sort(out)
	return out
}

func TestGatePolicy(t *testing.T) {
	p1, p2, p3, tr := libpeer.ID("P1"), libpeer.ID("P2"), libpeer.ID("P3"), libpeer.ID("T")
	type step struct {
		e      *event.Event
		signer libpeer.ID
		want   []string // UUIDs that count after this step
	}
	tests := []struct {
		name  string
		min   int
		steps []step
		held  int
	}{
		{"min 1 accepts every signed event", 1, []step{
			{sighting(1, "192.0.2.1", "100"), p1, []string{"u1"}},
			{sighting(2, "192.0.2.1", "100"), p1, []string{"u2"}},
		}, 0},
		{"a trusted peer counts at once", 3, []step{
			{sighting(1, "192.0.2.1", "100"), tr, []string{"u1"}},
		}, 0},
		{"held until a second peer reports the IP; the same peer twice is one", 2, []step{
			{sighting(1, "192.0.2.1", "100"), p1, nil},
			{sighting(2, "192.0.2.1", "200"), p1, nil},
			{sighting(3, "192.0.2.9", "300"), p2, nil},
			{sighting(4, "192.0.2.1", "400"), p2, []string{"u1", "u2", "u4"}},
			{sighting(5, "192.0.2.1", ""), p3, []string{"u5"}}, // the IP passed already
		}, 1},
		{"or the number", 2, []step{
			{sighting(1, "192.0.2.1", "100"), p1, nil},
			{sighting(2, "192.0.2.2", event.NotFound), p2, nil}, // no number: no number key
			{sighting(3, "192.0.2.3", "100"), p2, []string{"u1", "u3"}},
		}, 1},
		{"three peers", 3, []step{
			{sighting(1, "192.0.2.1", "100"), p1, nil},
			{sighting(2, "192.0.2.1", "100"), p2, nil},
			{sighting(3, "192.0.2.1", "100"), p3, []string{"u1", "u2", "u3"}},
		}, 0},
		{"known locally", 2, []step{
			{sighting(1, "198.51.100.7", "100"), p1, []string{"u1"}},
			{sighting(2, "192.0.2.1", "555"), p1, []string{"u2"}},
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(Policy{Trusted: []libpeer.ID{tr}, MinSightings: tt.min,
				Known: func(ip, n string) bool { return ip == "198.51.100.7" || n == "555" }})
			for i, s := range tt.steps {
				got := g.admit(s.e, s.signer)
				if !slices.Equal(uuids(got), s.want) {
					t.Errorf("step %d: counted %v, want %v", i, uuids(got), s.want)
				}
				for _, e := range got {
					if e.Peer == "" || e.Trusted != (e.Peer == tr.String()) {
						t.Errorf("step %d: %s peer %q trusted %v", i, e.UUID, e.Peer, e.Trusted)
					}
				}
			}
			if n, _ := g.pending(); n != tt.held {
				t.Errorf("%d held, want %d", n, tt.held)
			}
		})
	}
}

// A peer flooding unconfirmed sightings fills the pending room and no more: the oldest go,
// counted, and every key of a dropped event is forgotten with it.
func TestGateBounded(t *testing.T) {
	g := newGate(Policy{MinSightings: 2, MaxPending: 100, MaxPendingBytes: 1 << 30})
	for i := range 10000 {
		if got := g.admit(sighting(i, fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), fmt.Sprint(i)), "P1"); got != nil {
			t.Fatalf("event %d counted with one sighting", i)
		}
	}
	held, dropped := g.pending()
	if held != 100 || dropped != 9900 || len(g.keys) != 200 {
		t.Errorf("held %d, dropped %d, keys %d; want 100, 9900, 200", held, dropped, len(g.keys))
	}
	// The newest are the ones kept: a second peer confirms one of them.
	if got := g.admit(sighting(-1, "10.0.39.15", "x"), "P2"); !slices.Equal(uuids(got), []string{"u-1", "u9999"}) {
		t.Errorf("confirming a kept sighting counted %v", uuids(got))
	}
	g = newGate(Policy{MinSightings: 2, MaxPendingBytes: 64 << 10})
	for i := range 1000 {
		e := sighting(i, "192.0.2.1", "")
		e.SIPMessage = string(make([]byte, 4096))
		g.admit(e, "P1")
	}
	if g.bytes > 64<<10 {
		t.Errorf("%d bytes held, cap %d", g.bytes, 64<<10)
	}
}

func TestSeenEvents(t *testing.T) {
	s := newSeenEvents(2)
	steps := []struct {
		id, data, want string
	}{
		{"a", "x", ""},
		{"a", "x", ReasonDuplicate},
		{"a", "y", ReasonConflict},
		{"b", "x", ""}, // another event may carry the same bytes elsewhere: ids differ
		{"c", "z", ""}, // evicts a
		{"a", "y", ""},
		{"c", "z", ReasonDuplicate},
	}
	for i, st := range steps {
		if got := ReasonOf(s.add(st.id, []byte(st.data))); got != st.want {
			t.Errorf("step %d add(%s, %s): %q, want %q", i, st.id, st.data, got, st.want)
		}
	}
}
