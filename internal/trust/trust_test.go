package trust

import (
	"fmt"
	"slices"
	"testing"

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
	p1, p2, p3, tr := "P1", "P2", "P3", "T"
	type step struct {
		e      *event.Event
		source string
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
			g := New(Policy{Trusted: []string{tr}, MinSightings: tt.min,
				Known: func(ip, n string) bool { return ip == "198.51.100.7" || n == "555" }})
			for i, s := range tt.steps {
				got := g.Admit(s.e, s.source)
				if !slices.Equal(uuids(got), s.want) {
					t.Errorf("step %d: counted %v, want %v", i, uuids(got), s.want)
				}
				for _, e := range got {
					if e.Peer == "" || e.Trusted != (e.Peer == tr) {
						t.Errorf("step %d: %s peer %q trusted %v", i, e.UUID, e.Peer, e.Trusted)
					}
				}
			}
			if n, _ := g.Pending(); n != tt.held {
				t.Errorf("%d held, want %d", n, tt.held)
			}
		})
	}
}

// A peer flooding unconfirmed sightings fills the pending room and no more: the oldest go,
// counted, and every key of a dropped event is forgotten with it.
func TestGateBounded(t *testing.T) {
	g := New(Policy{MinSightings: 2, MaxPending: 100, MaxPendingBytes: 1 << 30})
	for i := range 10000 {
		if got := g.Admit(sighting(i, fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255), fmt.Sprint(i)), "P1"); got != nil {
			t.Fatalf("event %d counted with one sighting", i)
		}
	}
	held, dropped := g.Pending()
	if held != 100 || dropped != 9900 || len(g.keys) != 200 {
		t.Errorf("held %d, dropped %d, keys %d; want 100, 9900, 200", held, dropped, len(g.keys))
	}
	// The newest are the ones kept: a second peer confirms one of them.
	if got := g.Admit(sighting(-1, "10.0.39.15", "x"), "P2"); !slices.Equal(uuids(got), []string{"u-1", "u9999"}) {
		t.Errorf("confirming a kept sighting counted %v", uuids(got))
	}
	g = New(Policy{MinSightings: 2, MaxPendingBytes: 64 << 10})
	for i := range 1000 {
		e := sighting(i, "192.0.2.1", "")
		e.SIPMessage = string(make([]byte, 4096))
		g.Admit(e, "P1")
	}
	if g.bytes > 64<<10 {
		t.Errorf("%d bytes held, cap %d", g.bytes, 64<<10)
	}
}

// A zero Policy gets the documented bounds and accepts every event; the accessors peer's
// report reads say what the gate applies.
func TestGateDefaults(t *testing.T) {
	g := New(Policy{})
	if g.p.MaxPending != DefaultMaxPending || g.p.MaxPendingBytes != DefaultMaxPendingBytes || g.MinSightings() != 1 {
		t.Errorf("defaults: %d events, %d bytes, min %d", g.p.MaxPending, g.p.MaxPendingBytes, g.MinSightings())
	}
	g = New(Policy{Trusted: []string{"T"}, MinSightings: 3})
	if !g.Trusted("T") || g.Trusted("P1") || g.MinSightings() != 3 {
		t.Errorf("Trusted(T) %v, Trusted(P1) %v, MinSightings %d", g.Trusted("T"), g.Trusted("P1"), g.MinSightings())
	}
}
