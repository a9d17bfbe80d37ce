package sqlite

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
)

// mixedEvents are n events in time order as an import brings them: sources and numbers
// that repeat (national forms of one number among them), tools, payloads, pauses longer
// than a campaign's gap, a few peer events, and records given twice.
func mixedEvents(n int, seed uint64) []*event.Event {
	r := rand.New(rand.NewPCG(seed, 7))
	numbers := []string{"100", "0046812118532", "+46812118532", "9011441234567", "00441234567", "81046500729221",
		"981046500729221", "1000", "", event.NotFound, "<script>"}
	ips := []string{"192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1", "203.0.113.9", "1.2.3.4", "8.8.8.8"}
	t := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	var out []*event.Event
	for i := range n {
		if r.IntN(50) == 0 && len(out) > 0 {
			out = append(out, out[r.IntN(len(out))]) // the same record again
			continue
		}
		if r.IntN(200) == 0 {
			t = t.Add(2 * time.Hour) // a new campaign
		}
		t = t.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
		e := ev(i, ips[r.IntN(len(ips))], numbers[r.IntN(len(numbers))])
		e.Timestamp = event.FormatTime(t)
		e.UUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		e.SIPMethod = []string{"INVITE", "OPTIONS", "REGISTER"}[r.IntN(3)]
		e.SIPUserAgent = []string{"friendly-scanner", "sipcli/v1.8", "pplsip"}[r.IntN(3)]
		e.Tool = []string{"", "sipvicious", "sipcli", "made-up"}[r.IntN(4)]
		e.Transport = []string{event.UDP, "TCP"}[r.IntN(2)]
		e.SourceVerified = r.IntN(3) == 0
		if r.IntN(10) == 0 {
			e.Payload = []event.Payload{{Kind: "sqli", Where: "to"}}
		}
		if r.IntN(20) == 0 {
			e.FromPeer, e.Peer, e.Trusted = true, fmt.Sprintf("peer-%d", r.IntN(3)), r.IntN(2) == 0
		}
		out = append(out, e)
	}
	return out
}

// contents are a store's tables as sorted rows of text, without what depends on how the
// writes were cut into transactions: row ids and change sequences.
func contents(t *testing.T, s *Store) map[string][]string {
	t.Helper()
	queries := map[string]string{
		"events": `SELECT ` + eventColumns + ` FROM events`,
		"ip_addresses": `SELECT ip_address, first_seen, last_seen, seen_count, local_count, peers, trusted_peers,
			verified_count, verified_local, verified_trusted FROM ip_addresses`,
		"called_numbers": `SELECT called_number, first_seen, last_seen, seen_count, local_count, peers, trusted_peers,
			verified_count, verified_local, verified_trusted, target, target_country, target_type FROM called_numbers`,
		"number_keys":   `SELECT * FROM number_keys`,
		"event_counts":  `SELECT * FROM event_counts`,
		"totals":        `SELECT * FROM totals WHERE name IN ('ip_addresses', 'called_numbers')`,
		"minute_counts": `SELECT * FROM minute_counts`,
		"campaigns":     `SELECT source_ip, tool, country, sip_user_agent, first_seen, last_seen, seen_count FROM campaigns`,
		"key_peers":     `SELECT * FROM key_peers`,
		"new_numbers":   `SELECT * FROM new_numbers`,
	}
	out := map[string][]string{}
	for name, q := range queries {
		rows, err := s.bulk.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out[name] = append(out[name], fmt.Sprintf("%q", vals))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		slices.Sort(out[name])
	}
	return out
}

// noYield drops the bulk's pause after each commit, for tests without another writer.
func noYield(t *testing.T) {
	old := yieldAfterCommit
	yieldAfterCommit = 0
	t.Cleanup(func() { yieldAfterCommit = old })
}

func openAt(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLabeler(intel.NewLabeler("SE"))
	t.Cleanup(func() { s.Close() })
	return s
}

// writeCounted stores events through WriteCount in batches, as an import did before bulks.
func writeCounted(t *testing.T, s *Store, events []*event.Event, batch int) int {
	t.Helper()
	added := 0
	for len(events) > 0 {
		n := min(batch, len(events))
		k, err := s.WriteCount(context.Background(), events[:n])
		if err != nil {
			t.Fatal(err)
		}
		added += k
		events = events[n:]
	}
	return added
}

// bulkWrite stores events through a bulk, handed over chunk at a time; summed hands each
// chunk's Sums too, made with a labeler of their own as an import makes them.
func bulkWrite(t *testing.T, s *Store, events []*event.Event, o BulkOptions, chunk int, summed bool) int64 {
	t.Helper()
	ctx := context.Background()
	b, err := s.BeginBulk(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	l := intel.NewLabeler("SE")
	for len(events) > 0 {
		n := min(chunk, len(events))
		if summed {
			err = b.AddSummed(ctx, events[:n], Sum(events[:n], l))
		} else {
			err = b.Add(ctx, events[:n])
		}
		if err != nil {
			t.Fatal(err)
		}
		events = events[n:]
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return b.Added()
}

func diffContents(t *testing.T, got, want map[string][]string) {
	t.Helper()
	for name, w := range want {
		if g := got[name]; !reflect.DeepEqual(g, w) {
			t.Errorf("%s differs: %d rows, want %d", name, len(g), len(w))
			for i := range max(len(g), len(w)) {
				var a, b string
				if i < len(g) {
					a = g[i]
				}
				if i < len(w) {
					b = w[i]
				}
				if a != b {
					t.Errorf("  first difference:\n  got  %s\n  want %s", a, b)
					break
				}
			}
		}
	}
}

// A bulk stores what WriteCount stores for the same events, however its transactions and
// the chunks handed to it are cut; importing again adds nothing.
func TestBulkMatchesWriteCount(t *testing.T) {
	noYield(t)
	events := mixedEvents(3000, 1)
	tests := []struct {
		name  string
		o     BulkOptions
		chunk int
	}{
		{"defaults", BulkOptions{}, 2000},
		{"one transaction a chunk", BulkOptions{MaxEvents: 500}, 500},
		{"transactions across chunks", BulkOptions{MaxEvents: 700}, 300},
		{"bound by bytes", BulkOptions{MaxBytes: 5000}, 64},
		{"tiny", BulkOptions{MaxEvents: 3}, 7},
	}
	for _, tt := range tests {
		for _, summed := range []bool{false, true} {
			name := tt.name
			if summed {
				name += ", summed by the reader"
			}
			t.Run(name, func(t *testing.T) {
				// WriteCount given the same batches as the bulk (which never cuts one).
				ref := openAt(t, filepath.Join(t.TempDir(), "ref.db"))
				wantAdded := writeCounted(t, ref, events, tt.chunk)
				want := contents(t, ref)
				if len(want["campaigns"]) < 10 || len(want["number_keys"]) == 0 || len(want["key_peers"]) == 0 {
					t.Fatalf("the events exercise too little: %d campaigns, %d number keys, %d peer reports",
						len(want["campaigns"]), len(want["number_keys"]), len(want["key_peers"]))
				}
				s := openAt(t, filepath.Join(t.TempDir(), "bulk.db"))
				if added := bulkWrite(t, s, events, tt.o, tt.chunk, summed); added != int64(wantAdded) {
					t.Errorf("added %d, want %d", added, wantAdded)
				}
				diffContents(t, contents(t, s), want)
				if added := bulkWrite(t, s, events, tt.o, tt.chunk, summed); added != 0 {
					t.Errorf("again: added %d, want 0", added)
				}
				diffContents(t, contents(t, s), want)
			})
		}
	}
}

// A bulk over a store that holds some of the events already (an import run again after it
// was interrupted) adds the rest, and the store ends as if written once.
func TestBulkResumesAfterAbort(t *testing.T) {
	ctx := context.Background()
	noYield(t)
	events := mixedEvents(2000, 2)
	ref := openAt(t, filepath.Join(t.TempDir(), "ref.db"))
	wantAdded := writeCounted(t, ref, events, 400)
	want := contents(t, ref)

	s := openAt(t, filepath.Join(t.TempDir(), "bulk.db"))
	b, err := s.BeginBulk(ctx, BulkOptions{MaxEvents: 500})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1200; i += 400 { // one transaction committed, one open
		if err := b.Add(ctx, events[i:i+400]); err != nil {
			t.Fatal(err)
		}
	}
	first := b.Added()
	b.Abort()
	if err := b.Add(ctx, events[1200:]); err == nil {
		t.Error("Add after Abort succeeded")
	}
	n, err := s.CountEvents(ctx)
	if err != nil || n != first || first == 0 {
		t.Fatalf("after the abort: %d events stored (%v), %d committed", n, err, first)
	}
	if added := bulkWrite(t, s, events, BulkOptions{MaxEvents: 500}, 400, true); first+added != int64(wantAdded) {
		t.Errorf("added %d then %d, want %d in all", first, added, wantAdded)
	}
	diffContents(t, contents(t, s), want)
}

// A node writing the same file during a bulk is served between the bulk's transactions: its
// writes succeed while the bulk goes on, and the file ends holding both, as if each event
// had been written through WriteCount.
func TestBulkBesideAnotherWriter(t *testing.T) {
	ctx := context.Background()
	events := mixedEvents(3000, 3)
	var nodeEvents []*event.Event
	for i := range 500 {
		e := ev(900000+i, "198.51.100.200", "0046812118532")
		e.Timestamp = event.FormatTime(time.Date(2026, 11, 24, 0, 0, i, 0, time.UTC))
		nodeEvents = append(nodeEvents, e)
	}
	ref := openAt(t, filepath.Join(t.TempDir(), "ref.db"))
	writeCounted(t, ref, events, 2000)
	writeCounted(t, ref, nodeEvents, 10)
	want := contents(t, ref)
	delete(want, "campaigns") // the node's cache of open campaigns does not see the import's

	path := filepath.Join(t.TempDir(), "shared.db")
	node, imp := openAt(t, path), openAt(t, path)
	b, err := imp.BeginBulk(ctx, BulkOptions{MaxEvents: 200})
	if err != nil {
		t.Fatal(err)
	}
	var bulkDone atomic.Bool
	duringBulk := 0
	done := make(chan error)
	go func() {
		for i := 0; i < len(nodeEvents); i += 10 {
			if err := node.Write(ctx, nodeEvents[i:i+10]); err != nil {
				done <- err
				return
			}
			if !bulkDone.Load() {
				duringBulk++
			}
		}
		done <- nil
	}()
	for i := 0; i < len(events); i += 100 {
		if err := b.Add(ctx, events[i:min(i+100, len(events))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	bulkDone.Store(true)
	if err := <-done; err != nil {
		t.Fatalf("the node's write failed: %v", err)
	}
	if duringBulk == 0 {
		t.Error("no write of the node was committed while the bulk ran")
	}
	got := contents(t, imp)
	delete(got, "campaigns")
	diffContents(t, got, want)
	if err := imp.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}

// The bulk's page cache is for its own time: the writer's connection gets the default back.
func TestBulkRestoresTheCache(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "bulk.db"))
	cache := func() int64 {
		var n int64
		if err := s.w.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := cache()
	b, err := s.BeginBulk(ctx, BulkOptions{CacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got := cache(); got != -8192 {
		t.Errorf("cache_size during the bulk %d, want -8192", got)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cache(); got != before {
		t.Errorf("cache_size after the bulk %d, want %d", got, before)
	}
}

// A bulk keeps no event it has stored: what an import holds does not grow with the events
// of a transaction (only with its distinct keys).
func TestBulkKeepsNoEvents(t *testing.T) {
	noYield(t)
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "bulk.db"))
	b, err := s.BeginBulk(ctx, BulkOptions{MaxEvents: 1 << 20}) // one open transaction
	if err != nil {
		t.Fatal(err)
	}
	var collected atomic.Int64
	const batches, size = 5, 400
	for i := range batches {
		var batch []*event.Event
		for _, e := range mixedEvents(2*size, uint64(10+i)) {
			if !slices.Contains(batch, e) && len(batch) < size { // mixedEvents repeats some
				batch = append(batch, e)
			}
		}
		for j, e := range batch {
			e.UUID = fmt.Sprintf("00000000-0000-4000-8001-%012d", i*size+j)
			runtime.SetFinalizer(e, func(*event.Event) { collected.Add(1) })
		}
		if err := b.AddSummed(ctx, batch, Sum(batch, intel.NewLabeler("SE"))); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		runtime.GC()
		if collected.Load() >= (batches-1)*size {
			break
		}
		time.Sleep(10 * time.Millisecond) // finalizers run on their own goroutine
	}
	// The last batch's events may still be referenced (a reused slice); none before it.
	if n := collected.Load(); n < (batches-1)*size {
		t.Errorf("%d of %d stored events were collected while the transaction was open", n, batches*size)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
