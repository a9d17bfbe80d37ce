package sqlite

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Retention deletes old raw events in chunks, oldest first, and leaves every count the
// lookups, feeds and statistics read; pages go back to the file system; lookups answer
// throughout.
func TestPruneEvents(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	var mode int
	if err := s.w.QueryRowContext(ctx, "PRAGMA auto_vacuum").Scan(&mode); err != nil || mode != 2 {
		t.Fatalf("a new database's auto_vacuum is %d (%v), want 2 (incremental)", mode, err)
	}
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	const n = 6000
	big := strings.Repeat("x", 8<<10) // messages that fill pages, so that freeing them shows
	for b := 0; b < n; b += 1000 {
		var batch []*event.Event
		for i := b; i < b+1000; i++ {
			e := ev(i, fmt.Sprintf("198.51.100.%d", i%50), fmt.Sprint(4400000+i%300))
			e.UUID = uuid.Must(uuid.NewV7()).String()
			e.Timestamp = event.FormatTime(base.Add(time.Duration(i) * time.Minute))
			e.SIPMessage = big
			batch = append(batch, e)
		}
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	ipBefore, _, _ := s.IP(ctx, "198.51.100.7")
	topBefore, _, _ := s.Top(ctx, store.SIPMethods, "", 0)
	pages := func() (count, free int64) {
		s.w.QueryRowContext(ctx, "PRAGMA page_count").Scan(&count)
		s.w.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free)
		return
	}
	before, _ := pages()

	// Lookups go on while the events go.
	var lookups, wrong atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, ok, err := s.IP(ctx, "198.51.100.7")
			if err != nil || !ok || a.Count != ipBefore.Count {
				wrong.Add(1)
			}
			lookups.Add(1)
		}
	}()
	cutoff := event.FormatTime(base.Add(4500 * time.Minute))
	var chunks int
	for {
		got, err := s.PruneEvents(ctx, cutoff, 1000)
		if err != nil {
			t.Fatal(err)
		}
		chunks++
		if got < 1000 {
			break
		}
	}
	close(stop)
	wg.Wait()
	if chunks != 5 || lookups.Load() == 0 || wrong.Load() != 0 {
		t.Errorf("%d chunks, %d lookups, %d wrong answers", chunks, lookups.Load(), wrong.Load())
	}
	var left int64
	var oldest string
	s.w.QueryRowContext(ctx, "SELECT count(*), min(event_timestamp) FROM events").Scan(&left, &oldest)
	if left != n-4500 || oldest != cutoff {
		t.Errorf("%d events left, oldest %s; want %d from %s", left, oldest, n-4500, cutoff)
	}
	if a, _, _ := s.IP(ctx, "198.51.100.7"); a != ipBefore {
		t.Errorf("aggregate after pruning %+v, before %+v", a, ipBefore)
	}
	if top, _, _ := s.Top(ctx, store.SIPMethods, "", 0); fmt.Sprint(top) != fmt.Sprint(topBefore) {
		t.Errorf("counts after pruning %v, before %v", top, topBefore)
	}
	after, free := pages()
	if after > before/2 || free > 64 {
		t.Errorf("%d pages before, %d after (%d free): the freed pages were not given back", before, after, free)
	}
	// Nothing older is left: the next round deletes nothing.
	if got, err := s.PruneEvents(ctx, cutoff, 1000); got != 0 || err != nil {
		t.Errorf("a second round deleted %d (%v)", got, err)
	}
}
