package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/storetest"
)

func open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(context.Background(), filepath.Join(t.TempDir(), "sub", "dialtrap.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func ev(i int, ip, number string) *event.Event {
	ts := time.Date(2026, 11, 23, 0, 0, i, 0, time.UTC)
	return &event.Event{
		AppName: event.AppName, AppVersion: "t", Timestamp: event.FormatTime(ts),
		UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "n",
		CollectedMethod: event.Passive, Transport: event.UDP, SourceIP: ip, SourcePort: 5000 + i,
		DestinationIP: "127.0.0.1", DestinationPort: 5060, CalledNumber: number,
		SIPMethod: "OPTIONS", SIPUserAgent: "friendly-scanner", SIPMessage: "OPTIONS \x00 ✓",
	}
}

func TestWriteAggregatesAndIdempotence(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	batch := []*event.Event{
		ev(1, "192.0.2.1", "100"), ev(2, "192.0.2.1", "0046812118532"), ev(3, "2001:db8::1", "100"),
		ev(4, "192.0.2.1", event.NotFound), ev(5, "192.0.2.9", ""),
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// The same batch again (a retry after a timeout, or a re-import) changes nothing.
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []*event.Event{ev(6, "192.0.2.1", "100")}); err != nil {
		t.Fatal(err)
	}
	n, err := s.CountEvents(ctx)
	if err != nil || n != 6 {
		t.Fatalf("%d events (%v), want 6", n, err)
	}
	tests := []struct {
		lookup      func(context.Context, string) (store.Aggregate, bool, error)
		key         string
		found       bool
		count       int64
		first, last int
	}{
		{s.IP, "192.0.2.1", true, 4, 1, 6},
		{s.IP, "2001:db8::1", true, 1, 3, 3},
		{s.IP, "192.0.2.9", true, 1, 5, 5},
		{s.IP, "198.51.100.1", false, 0, 0, 0},
		{s.Number, "100", true, 3, 1, 6},
		{s.Number, "0046812118532", true, 1, 2, 2},
		{s.Number, event.NotFound, false, 0, 0, 0},
		{s.Number, "", false, 0, 0, 0},
		{s.Number, "100' OR 1=1 --", false, 0, 0, 0},
	}
	for _, tt := range tests {
		a, ok, err := tt.lookup(ctx, tt.key)
		if err != nil {
			t.Fatal(err)
		}
		if ok != tt.found || a.Count != tt.count {
			t.Errorf("%q: found %v count %d, want %v %d", tt.key, ok, a.Count, tt.found, tt.count)
			continue
		}
		if ok && (a.FirstSeen != ev(tt.first, "", "").Timestamp || a.LastSeen != ev(tt.last, "", "").Timestamp) {
			t.Errorf("%q: seen %s..%s, want events %d..%d", tt.key, a.FirstSeen, a.LastSeen, tt.first, tt.last)
		}
	}
	var got []*event.Event
	if err := s.Events(ctx, func(e *event.Event) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || !reflect.DeepEqual(got[0], batch[0]) {
		t.Errorf("events do not round-trip:\n got %+v\nwant %+v", got[0], batch[0])
	}
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "1")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var v int
	if err := s.r.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version %d (%v), want %d", v, err, len(migrations))
	}
	if n, _ := s.CountEvents(ctx); n != 1 {
		t.Errorf("%d events after reopen", n)
	}
	if err := s.IntegrityCheck(ctx); err != nil {
		t.Error(err)
	}
}

func TestRefusesNewerSchemaAndNonDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec("PRAGMA user_version = 999"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := Open(ctx, path); err == nil || !strings.Contains(err.Error(), "upgrade dialtrap") {
		t.Errorf("opened a newer schema: %v", err)
	}
}

// A full disk makes Write fail; the hub keeps the batch and retries, and once space is back
// the same batch is stored whole. SQLite's max_page_count gives the same SQLITE_FULL error.
func TestFullDiskThenRecovery(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	var pages int
	if err := s.w.QueryRow("PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.Exec(fmt.Sprintf("PRAGMA max_page_count = %d", pages+1)); err != nil {
		t.Fatal(err)
	}
	var batch []*event.Event
	for i := range 200 {
		e := ev(i, fmt.Sprintf("192.0.2.%d", i%250), "100")
		e.SIPMessage = strings.Repeat("x", 4000)
		batch = append(batch, e)
	}
	err := s.Write(ctx, batch)
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("write on a full database: %v, want a 'full' error", err)
	}
	if n, _ := s.CountEvents(ctx); n != 0 {
		t.Fatalf("a failed batch left %d events behind", n)
	}
	if _, err := s.w.Exec("PRAGMA max_page_count = 1073741823"); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountEvents(ctx); n != 200 {
		t.Fatalf("%d events after recovery, want 200", n)
	}
}

func BenchmarkWrite(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]*event.Event, 1000)
	i := 0
	for b.Loop() {
		for j := range batch {
			i++
			e := ev(i%60, fmt.Sprintf("192.0.2.%d", i%20), fmt.Sprint(46000000+i%5000))
			// As captured events have: time-ordered UUIDs and timestamps.
			e.UUID = uuid.Must(uuid.NewV7()).String()
			e.Timestamp = event.FormatTime(time.Date(2026, 11, 23, 0, 0, 0, i*1000, time.UTC))
			batch[j] = e
		}
		if err := s.Write(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}

// A batch mixing stored and new events (a retry that partly succeeded elsewhere, an import
// over a live store) counts only the new ones, even with the duplicates in the middle of a
// multi-row insert.
func TestPartlyDuplicateBatch(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	var first []*event.Event
	for i := range 100 {
		first = append(first, ev(i, "192.0.2.1", fmt.Sprint(i%3)))
	}
	if err := s.Write(ctx, first[:50]); err != nil {
		t.Fatal(err)
	}
	// 0-49 again, interleaved with 50-99 which are new.
	var mixed []*event.Event
	for i := range 50 {
		mixed = append(mixed, first[i], first[50+i])
	}
	if err := s.Write(ctx, mixed); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountEvents(ctx); n != 100 {
		t.Fatalf("%d events, want 100", n)
	}
	a, _, err := s.IP(ctx, "192.0.2.1")
	if err != nil || a.Count != 100 {
		t.Errorf("IP seen %d times (%v), want 100", a.Count, err)
	}
	var sum int64
	for k := range 3 {
		a, _, _ := s.Number(ctx, fmt.Sprint(k))
		sum += a.Count
	}
	if sum != 100 {
		t.Errorf("numbers counted %d times, want 100", sum)
	}
}

// An import beside a running node counts what it added itself, however many events the node
// writes meanwhile (it used to report the table's growth: "-298208 already stored").
func TestWriteCountIgnoresOtherWriters(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shared.db")
	node, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	imp, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close()
	batch := make([]*event.Event, 2000)
	for i := range batch {
		batch[i] = ev(i, "192.0.2.1", "100")
	}
	if n, err := imp.WriteCount(ctx, batch[:500]); n != 500 || err != nil {
		t.Fatalf("first 500: %d %v", n, err)
	}
	done := make(chan error)
	go func() {
		for i := range 50 {
			b := make([]*event.Event, 100)
			for j := range b {
				b[j] = ev(100000+i*100+j, "198.51.100.1", "200")
			}
			if err := node.Write(ctx, b); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	n, err := imp.WriteCount(ctx, batch)
	if err != nil || n != 1500 {
		t.Errorf("WriteCount = %d, %v; want the 1500 new of 2000", n, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, err := imp.WriteCount(ctx, batch); n != 0 || err != nil {
		t.Errorf("again: %d %v, want 0", n, err)
	}
}

// The database and the WAL and shared-memory files SQLite makes beside it are not readable by
// other users: they hold what attackers sent.
func TestFilesAreNotWorldReadable(t *testing.T) {
	s := open(t)
	if err := s.Write(context.Background(), []*event.Event{ev(1, "192.0.2.1", "100")}); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		fi, err := os.Stat(s.path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m&0o007 != 0 || m&0o600 != 0o600 {
			t.Errorf("%s has mode %v, want 0640", s.path+suffix, m)
		}
	}
}

// Several processes opening one new database at once (nodes started together, an import
// beside a starting node) all get it migrated once: each migration step reads the version
// inside the write transaction that applies it.
func TestConcurrentOpensMigrateOnce(t *testing.T) {
	ctx := context.Background()
	for run := range 10 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("race%d.db", run))
		errs := make(chan error, 3)
		for range 3 {
			go func() {
				s, err := Open(ctx, path)
				if err == nil {
					err = s.Close()
				}
				errs <- err
			}()
		}
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatalf("run %d: %v", run, err)
			}
		}
	}
}

// The store passes the suite every backend must pass.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend { return open(t) })
}

// BenchmarkWriteSmallBatches is the store's cost per event at the batch sizes low rates
// make (an event alone, or the few of a short commit wait), with what capture writes: a
// labeler, scanner events from a few sources, each with a number never seen before.
//
//	go test -run '^$' -bench WriteSmallBatches ./internal/store/sqlite
func BenchmarkWriteSmallBatches(b *testing.B) {
	for _, size := range []int{1, 5, 50, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, filepath.Join(b.TempDir(), "b.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.SetLabeler(intel.NewLabeler(""))
			batch := make([]*event.Event, size)
			i := 0
			for b.Loop() {
				for j := range batch {
					i++
					e := ev(i%60, fmt.Sprintf("192.0.2.%d", i%4), fmt.Sprint(900346500000000+i))
					e.UUID = uuid.Must(uuid.NewV7()).String()
					e.Timestamp = event.FormatTime(time.Date(2026, 11, 23, 0, 0, 0, i*1000, time.UTC))
					e.Tool, e.SIPMethod = "sipvicious", "INVITE"
					batch[j] = e
				}
				if err := s.Write(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/event")
		})
	}
}
