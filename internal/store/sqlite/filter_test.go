package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestFilterNoFalseNegativesFewFalsePositives(t *testing.T) {
	const n = 100_000
	f := newFilter(n / 2) // sized for half: filled to its capacity
	for i := range n {
		f.add(fmt.Sprint("k", i))
	}
	for i := range n {
		if !f.mayContain(fmt.Sprint("k", i)) {
			t.Fatalf("false negative for k%d", i)
		}
	}
	fp := 0
	for i := range n {
		if f.mayContain(fmt.Sprint("other", i)) {
			fp++
		}
	}
	if rate := float64(fp) / n; rate > 0.02 {
		t.Errorf("false-positive rate %.3f at capacity, want under 0.02", rate)
	}
	if f.full() {
		t.Error("full at capacity")
	}
	f.add("one more")
	if !f.full() {
		t.Error("not full past capacity")
	}
}

func waitFilters(t *testing.T, s *Store) {
	t.Helper()
	s.PrepareLookups()
	deadline := time.Now().Add(10 * time.Second)
	for s.keys.ip.cur.Load() == nil || s.keys.num.cur.Load() == nil {
		if time.Now().After(deadline) {
			t.Fatal("filters not built after 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Own writes are found at once; rows another process writes (dialtrap import beside a
// running node) are found once the next check has rebuilt the filter.
func TestFilterFollowsOwnAndOtherWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "f.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitFilters(t, s)
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "4681234567")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Number(ctx, "4681234567"); !ok {
		t.Fatal("own write not found at once")
	}
	if _, ok, _ := s.IP(ctx, "192.0.2.1"); !ok {
		t.Fatal("own IP not found at once")
	}
	if _, ok, _ := s.Number(ctx, "4681234568"); ok {
		t.Fatal("found a number never written")
	}

	other, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	var batch []*event.Event
	for i := range 50 {
		batch = append(batch, ev(100+i, fmt.Sprintf("198.51.100.%d", i), fmt.Sprint(3300000000+i)))
	}
	if err := other.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	other.Close()
	deadline := time.Now().Add(5 * filterCheckInterval)
	for {
		missing := 0
		for i := range 50 {
			if _, ok, err := s.Number(ctx, fmt.Sprint(3300000000+i)); err != nil {
				t.Fatal(err)
			} else if !ok {
				missing++
			}
			if _, ok, _ := s.IP(ctx, fmt.Sprintf("198.51.100.%d", i)); !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys written by another store still not found after %s", missing, 5*filterCheckInterval)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Still exact for its own writes after the rebuild.
	if err := s.Write(ctx, []*event.Event{ev(200, "203.0.113.7", "4699999999")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Number(ctx, "4699999999"); !ok {
		t.Fatal("own write after rebuild not found")
	}
}

// Writes racing the rebuild (the writer adds to the pending filter) are never lost.
func TestFilterRebuildUnderWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	s.PrepareLookups()
	for round := range 20 {
		s.keys.ip.cur.Store(nil) // force rebuilds while writing
		s.keys.num.cur.Store(nil)
		var batch []*event.Event
		for i := range 100 {
			batch = append(batch, ev(round*1000+i, fmt.Sprintf("10.%d.%d.1", round, i), fmt.Sprint(5500000000+round*1000+i)))
		}
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	waitFilters(t, s)
	for round := range 20 {
		for i := range 100 {
			if _, ok, _ := s.Number(ctx, fmt.Sprint(5500000000+round*1000+i)); !ok {
				t.Fatalf("number of round %d, %d lost", round, i)
			}
		}
	}
}
