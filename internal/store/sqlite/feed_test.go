package sqlite

import (
	"context"
	"slices"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// feedKeys reads every page of a feed, two keys a page, so that the cursor is exercised.
func feedKeys(t *testing.T, s *Store, f store.FeedFilter, o store.FeedOrder) []string {
	t.Helper()
	var keys []string
	var after store.FeedItem
	for {
		page, err := s.FeedPage(context.Background(), store.IPAddresses, f, o, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page {
			keys = append(keys, it.Key)
		}
		if len(page) < 2 {
			return keys
		}
		after = page[len(page)-1]
	}
}

func TestFeedFilters(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	verified := func(e *event.Event) *event.Event { e.SourceVerified = true; return e }
	peer := func(e *event.Event, trusted bool) *event.Event {
		e.FromPeer, e.Peer, e.Trusted = true, "12D3KooWPeer", trusted
		return e
	}
	batch := []*event.Event{
		ev(1, "192.0.2.1", "100"),                        // local, unverified (a forged UDP source, perhaps)
		verified(ev(2, "192.0.2.2", "100")),              // local, verified
		ev(3, "192.0.2.2", "100"),                        // ... seen twice
		peer(verified(ev(4, "192.0.2.3", "100")), true),  // trusted peer, verified
		peer(verified(ev(5, "192.0.2.4", "100")), false), // untrusted peer, verified
		peer(ev(6, "192.0.2.1", "100"), false),           // untrusted peer's claim on .1
		peer(verified(ev(7, "192.0.2.1", "100")), false), // ... verified: still not ours to believe
		peer(ev(8, "192.0.2.5", "100"), true),            // trusted, unverified
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		f    store.FeedFilter
		want []string
	}{
		{"default: verified by us or a trusted peer", store.FeedFilter{Verified: true}, []string{"192.0.2.2", "192.0.2.3"}},
		{"local and trusted, any", store.FeedFilter{}, []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.5"}},
		{"local verified", store.FeedFilter{Verified: true, Source: store.SourceLocal}, []string{"192.0.2.2"}},
		{"local any", store.FeedFilter{Source: store.SourceLocal}, []string{"192.0.2.1", "192.0.2.2"}},
		{"all verified", store.FeedFilter{Verified: true, Source: store.SourceAll}, []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}},
		{"all", store.FeedFilter{Source: store.SourceAll}, []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}},
		{"min count", store.FeedFilter{MinCount: 2, Source: store.SourceAll}, []string{"192.0.2.1", "192.0.2.2"}},
		{"since", store.FeedFilter{Since: batch[3].Timestamp, Source: store.SourceAll}, []string{"192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5"}},
		{"until", store.FeedFilter{Until: batch[3].Timestamp, Source: store.SourceAll}, []string{"192.0.2.2", "192.0.2.3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := feedKeys(t, s, c.f, store.ByKey); !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
	if got := feedKeys(t, s, store.FeedFilter{Source: store.SourceAll}, store.ByLastSeen); !slices.Equal(got, []string{"192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.1", "192.0.2.5"}) {
		t.Errorf("by last seen: %v", got)
	}
	a, ok, err := s.IP(ctx, "192.0.2.2")
	if err != nil || !ok || a.Verified != 1 || a.Count != 2 {
		t.Errorf("lookup: %+v %v %v, want 1 verified of 2", a, ok, err)
	}
}

func TestFeedChangeSequence(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	epoch, seq0, err := s.ChangeSeq(ctx)
	if err != nil || epoch == 0 || seq0 != 0 {
		t.Fatalf("fresh store: epoch %d seq %d %v", epoch, seq0, err)
	}
	all := store.FeedFilter{Source: store.SourceAll}
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "1"), ev(2, "192.0.2.2", "2")}); err != nil {
		t.Fatal(err)
	}
	_, seq1, _ := s.ChangeSeq(ctx)
	if err := s.Write(ctx, []*event.Event{ev(3, "192.0.2.3", "3"), ev(4, "192.0.2.1", "1")}); err != nil {
		t.Fatal(err)
	}
	_, seq2, _ := s.ChangeSeq(ctx)
	if seq1 != 1 || seq2 != 2 {
		t.Fatalf("sequences %d %d, want 1 2", seq1, seq2)
	}
	// Changed after the first write: .3 (new) and .1 (seen again), in (seq, key) order; .2 first.
	if got := feedKeys(t, s, all, store.BySeq); !slices.Equal(got, []string{"192.0.2.2", "192.0.2.1", "192.0.2.3"}) {
		t.Errorf("all changes: %v", got)
	}
	page, err := s.FeedPage(ctx, store.IPAddresses, all, store.BySeq, store.FeedItem{Seq: seq1, Key: "\xff"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range page {
		got = append(got, it.Key)
		if it.Seq != seq2 {
			t.Errorf("%s seq %d, want %d", it.Key, it.Seq, seq2)
		}
	}
	if !slices.Equal(got, []string{"192.0.2.1", "192.0.2.3"}) {
		t.Errorf("changes after %d: %v", seq1, got)
	}
	// A batch of known events changes nothing: no new sequence is worth a client's poll.
	s.Write(ctx, []*event.Event{ev(3, "192.0.2.3", "3")})
	if _, seq3, _ := s.ChangeSeq(ctx); seq3 != seq2 {
		t.Errorf("sequence after a repeated batch: %d", seq3)
	}
	s.Close()
	// The epoch stays with the database.
	s2, err := Open(ctx, s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if e2, _, _ := s2.ChangeSeq(ctx); e2 != epoch {
		t.Errorf("epoch %d after reopening, was %d", e2, epoch)
	}
}
