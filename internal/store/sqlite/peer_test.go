package sqlite

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

func peerEv(i int, ip, number, peer string, trusted bool) *event.Event {
	e := ev(i, ip, number)
	e.FromPeer, e.Peer, e.Trusted, e.Sealed = true, peer, trusted, []byte("sealed-"+fmt.Sprint(i))
	return e
}

// Each aggregate says where it was seen: how many events were captured here, how many
// distinct peers reported it and how many of those were trusted. A peer counts once per key
// however many events it sends, and a retried batch counts nothing twice.
func TestPeerProvenance(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	batches := [][]*event.Event{
		{ev(1, "192.0.2.1", "100"), peerEv(2, "192.0.2.1", "100", "P1", false)},
		{peerEv(3, "192.0.2.1", "200", "P1", false), peerEv(4, "192.0.2.2", "200", "P2", true)},
		{peerEv(3, "192.0.2.1", "200", "P1", false)}, // a retry
		{peerEv(5, "192.0.2.1", "100", "P2", false), peerEv(6, "192.0.2.2", "300", "P1", true),
			peerEv(7, "192.0.2.1", "", "P1", true)}, // P1 trusted now
	}
	for _, b := range batches {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	want := []struct {
		l                   store.List
		key                 string
		count, local, peers int64
		trusted             int64
	}{
		{store.IPAddresses, "192.0.2.1", 5, 1, 2, 1},
		{store.IPAddresses, "192.0.2.2", 2, 0, 2, 2},
		{store.CalledNumbers, "100", 3, 1, 2, 0},
		{store.CalledNumbers, "200", 2, 0, 2, 1},
		{store.CalledNumbers, "300", 1, 0, 1, 1},
	}
	listed := map[string]store.Aggregate{}
	for _, l := range []store.List{store.IPAddresses, store.CalledNumbers} {
		if err := s.Each(ctx, l, store.ListOptions{}, func(a store.Aggregate) error {
			listed[fmt.Sprint(l, a.Key)] = a
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range want {
		var a store.Aggregate
		var ok bool
		var err error
		if w.l == store.IPAddresses {
			a, ok, err = s.IP(ctx, w.key)
		} else {
			a, ok, err = s.Number(ctx, w.key)
		}
		if !ok || err != nil || a.Count != w.count || a.Local != w.local || a.Peers != w.peers || a.TrustedPeers != w.trusted {
			t.Errorf("%s: %+v (%v %v), want count %d local %d peers %d trusted %d", w.key, a, ok, err, w.count, w.local, w.peers, w.trusted)
		}
		if l := listed[fmt.Sprint(w.l, w.key)]; l != a {
			t.Errorf("%s listed as %+v, looked up as %+v", w.key, l, a)
		}
	}
	m, err := s.MatchNumbers(ctx, "100")
	if err != nil || len(m) != 1 || m[0].Peers != 2 || m[0].Local != 1 {
		t.Errorf("MatchNumbers(100) = %+v %v", m, err)
	}
}

// Recent pages through events in time order whatever order they were stored in, each event
// once, with the signer and envelope of peer events.
func TestRecentPages(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	order := []int{5, 1, 9, 3, 3, 7, 2, 8, 4, 6, 0}
	var batch []*event.Event
	for k, i := range order {
		e := peerEv(i, "192.0.2.1", "100", "P1", false)
		e.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", 100+k) // two events share second 3
		batch = append(batch, e)
	}
	batch[0].FromPeer, batch[0].Peer, batch[0].Sealed = false, "", nil
	if err := s.Write(ctx, batch[:6]); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch[6:]); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 3, 100} {
		var got []string
		var since string
		var afterID int64
		for page := 0; ; page++ {
			n := 0
			if err := s.Recent(ctx, since, afterID, limit, func(e *event.Event, id int64) error {
				n++
				since, afterID = e.Timestamp, id
				got = append(got, e.Timestamp[17:19])
				if e.FromPeer != (e.Peer == "P1") || e.FromPeer != strings.HasPrefix(string(e.Sealed), "sealed-") {
					t.Errorf("event %s: from peer %v, peer %q, sealed %q", e.UUID, e.FromPeer, e.Peer, e.Sealed)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if n < limit || page > 20 {
				break
			}
		}
		if w := "00 01 02 03 03 04 05 06 07 08 09"; strings.Join(got, " ") != w {
			t.Errorf("limit %d: seconds %v, want %s", limit, got, w)
		}
	}
	// From a time on: only what is at or after it.
	var n int
	if err := s.Recent(ctx, ev(7, "", "").Timestamp, 0, 100, func(*event.Event, int64) error {
		n++
		return nil
	}); err != nil || n != 3 {
		t.Errorf("since second 7: %d events (%v), want 3", n, err)
	}
	var plan string
	if err := s.bulk.QueryRow(`EXPLAIN QUERY PLAN SELECT id FROM events WHERE event_timestamp >= ?1 AND (event_timestamp > ?1 OR id > ?2)
		ORDER BY event_timestamp, id LIMIT ?3`, "", 0, 1).Scan(new(int), new(int), new(int), &plan); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "events_time") {
		t.Errorf("catch-up query plan %q does not use the time index", plan)
	}
}
