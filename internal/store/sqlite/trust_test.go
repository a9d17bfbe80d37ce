package sqlite

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Events read back with FillTrusted and written, in order, into an empty store give it the
// source's aggregates, trusted peers and verified trusted sightings included, even where a
// peer's trust differs between the keys of one event. Without FillTrusted they would not.
func TestFillTrustedRebuildsTrust(t *testing.T) {
	ctx := context.Background()
	src := open(t)
	verified := func(e *event.Event) *event.Event { e.SourceVerified = true; return e }
	for _, b := range [][]*event.Event{
		{ev(1, "192.0.2.1", "100"), peerEv(2, "192.0.2.1", "100", "P1", false)},
		{verified(peerEv(3, "192.0.2.1", "200", "P1", false)), verified(peerEv(4, "192.0.2.2", "200", "P2", true))},
		{peerEv(5, "192.0.2.1", "100", "P2", false), verified(peerEv(6, "192.0.2.2", "300", "P1", true)),
			peerEv(7, "192.0.2.1", "", "P1", true)}, // P1 trusted for 192.0.2.1 now, not for 100 or 200
	} {
		if err := src.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := OpenReadOnly(ctx, src.path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var all []*event.Event
	if err := ro.Recent(ctx, "", 0, 100, func(e *event.Event, _ int64) error { all = append(all, e); return nil }); err != nil {
		t.Fatal(err)
	}
	lists := func(s *Store) map[store.List][]store.Aggregate {
		out := map[store.List][]store.Aggregate{}
		for _, l := range []store.List{store.IPAddresses, store.CalledNumbers} {
			if err := s.Each(ctx, l, store.ListOptions{}, func(a store.Aggregate) error {
				out[l] = append(out[l], a)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	want := lists(src)
	for _, fill := range []bool{false, true} {
		dst, err := Open(ctx, filepath.Join(t.TempDir(), "copy.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		batch := make([]*event.Event, len(all))
		for i, e := range all {
			c := *e
			batch[i] = &c
		}
		if fill {
			if err := ro.FillTrusted(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		if err := dst.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if got := lists(dst); reflect.DeepEqual(got, want) != fill {
			t.Errorf("FillTrusted %v: copy's lists equal the source's: %v\n got %+v\nwant %+v", fill, !fill, got, want)
		}
	}
}
