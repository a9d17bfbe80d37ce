package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// seeded returns a store holding events 1..n from IPs 192.0.2.(i%k) dialling numbers
// 4681234500+(i%k), one second apart.
func seeded(t *testing.T, n, k int) *Store {
	t.Helper()
	s := open(t)
	var batch []*event.Event
	for i := 1; i <= n; i++ {
		batch = append(batch, ev(i, fmt.Sprintf("192.0.2.%d", i%k), fmt.Sprint(4681234500+i%k)))
	}
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return s
}

func keys(t *testing.T, s *Store, l store.List, o store.ListOptions) []string {
	t.Helper()
	var out []string
	if err := s.Each(context.Background(), l, o, func(a store.Aggregate) error {
		out = append(out, a.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestListsNewestFirstPagedAndFiltered(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 20, 5) // key j last seen at event 15+j (j=0 at 20)
	since := ev(17, "", "").Timestamp
	tests := []struct {
		name string
		o    store.ListOptions
		want []string
	}{
		{"all", store.ListOptions{}, []string{"192.0.2.0", "192.0.2.4", "192.0.2.3", "192.0.2.2", "192.0.2.1"}},
		{"limit", store.ListOptions{Limit: 2}, []string{"192.0.2.0", "192.0.2.4"}},
		{"offset", store.ListOptions{Offset: 3}, []string{"192.0.2.2", "192.0.2.1"}},
		{"page", store.ListOptions{Limit: 2, Offset: 2}, []string{"192.0.2.3", "192.0.2.2"}},
		{"past the end", store.ListOptions{Offset: 9}, nil},
		{"since", store.ListOptions{Since: since}, []string{"192.0.2.0", "192.0.2.4", "192.0.2.3", "192.0.2.2"}},
		{"since and limit", store.ListOptions{Since: since, Limit: 1}, []string{"192.0.2.0"}},
	}
	for _, tt := range tests {
		if got := keys(t, s, store.IPAddresses, tt.o); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := keys(t, s, store.CalledNumbers, store.ListOptions{Limit: 1}); !slices.Equal(got, []string{"4681234500"}) {
		t.Errorf("numbers: %q", got)
	}
	for _, tc := range []struct {
		l     store.List
		since string
		want  int64
	}{{store.IPAddresses, "", 5}, {store.CalledNumbers, "", 5}, {store.IPAddresses, since, 4}, {store.CalledNumbers, "9999", 0}} {
		if n, err := s.Count(ctx, tc.l, tc.since); err != nil || n != tc.want {
			t.Errorf("Count(%d, %q) = %d, %v; want %d", tc.l, tc.since, n, err, tc.want)
		}
	}
}

// The lists must stream in index order: a temporary B-tree would sort the whole table in
// memory before the first row.
func TestListQueriesUseTheIndex(t *testing.T) {
	s := open(t)
	for l, tbl := range lists {
		rows, err := s.r.Query(`EXPLAIN QUERY PLAN SELECT `+tbl.key+`, first_seen, last_seen, seen_count FROM `+
			tbl.table+` WHERE last_seen >= ? ORDER BY last_seen DESC, `+tbl.key+` DESC LIMIT ? OFFSET ?`, "", -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		plan := planText(t, rows)
		if strings.Contains(plan, "TEMP B-TREE") || !strings.Contains(plan, "_last_seen") {
			t.Errorf("list %d plan does not stream from the index:\n%s", l, plan)
		}
	}
}

func planText(t *testing.T, rows *sql.Rows) string {
	t.Helper()
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		b.WriteString(detail + "\n")
	}
	return b.String()
}

// MatchNumbers agrees with event.NumbersMatch, whether the number filter (which answers
// national misses) is off, built before the numbers were written, or built after.
func TestMatchNumbers(t *testing.T) {
	for _, mode := range []string{"no filter", "filter before writes", "filter after writes"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			s := open(t)
			if mode == "filter before writes" {
				waitFilters(t, s)
			}
			stored := []string{"+46812345678", "90046812345678", "0046812345678", "+44812345678", "100", "9100", "0812345678"}
			var batch []*event.Event
			for i, n := range stored {
				batch = append(batch, ev(i+1, "192.0.2.1", n))
			}
			if err := s.Write(ctx, batch); err != nil {
				t.Fatal(err)
			}
			if mode == "filter after writes" {
				waitFilters(t, s)
			}
			for _, q := range []string{"+46812345678", "46812345678", "901146812345678", "00046812345678", "100", "+44812345678",
				"0812345678", "123456789", "admin", "+4912345678", "9100"} {
				var want []string
				for i := len(stored) - 1; i >= 0; i-- { // newest first
					if event.NumbersMatch(q, stored[i]) {
						want = append(want, stored[i])
					}
				}
				got, err := s.MatchNumbers(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				var gotKeys []string
				for _, a := range got {
					gotKeys = append(gotKeys, a.Key)
				}
				if !slices.Equal(gotKeys, want) {
					t.Errorf("MatchNumbers(%q) = %q, want %q", q, gotKeys, want)
				}
			}
		})
	}
}

func TestTop(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	var batch []*event.Event
	for i := 1; i <= 10; i++ {
		e := ev(i, "192.0.2.1", "100")
		if i > 7 {
			e.SIPMethod, e.SIPUserAgent, e.Transport = "INVITE", strings.Repeat("é", 300), event.TCP
		}
		batch = append(batch, e)
	}
	old := ev(1, "192.0.2.2", "100")
	old.Timestamp, old.UUID = "2026-11-22 22:59:59.000000000", "00000000-0000-4000-8000-999999999999"
	batch = append(batch, old)
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("é", store.MaxCountedValue)
	tests := []struct {
		d        store.Dimension
		since    string
		limit    int
		want     []store.ValueCount
		distinct int64
	}{
		{store.SIPMethods, "", 0, []store.ValueCount{vc("OPTIONS", 8), vc("INVITE", 3)}, 2},
		{store.SIPMethods, "2026-11-23 00:30:00.000000000", 0, []store.ValueCount{vc("OPTIONS", 7), vc("INVITE", 3)}, 2},
		{store.UserAgents, "", 1, []store.ValueCount{vc("friendly-scanner", 8)}, 2},
		{store.UserAgents, "", 0, []store.ValueCount{vc("friendly-scanner", 8), vc(long, 3)}, 2},
		{store.Transports, "", 0, []store.ValueCount{vc("UDP", 8), vc("TCP", 3)}, 2},
		{store.Transports, "2027-01-01", 0, nil, 0},
	}
	for _, tt := range tests {
		got, distinct, err := s.Top(ctx, tt.d, tt.since, tt.limit)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tt.want) || distinct != tt.distinct {
			t.Errorf("Top(%d, %q, %d) = %v (%d distinct), want %v (%d)", tt.d, tt.since, tt.limit, got, distinct, tt.want, tt.distinct)
		}
	}
}

// A database made by the first schema version gains the match keys, counts and totals of the
// events it already holds when this version opens it.
func TestMigrationBackfills(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v1.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	fromPeer := ev(3, "192.0.2.3", "200")
	fromPeer.FromPeer, fromPeer.Peer = true, "12D3KooWPeer"
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "0046812345678"), ev(2, "192.0.2.2", "100"), fromPeer}); err != nil {
		t.Fatal(err)
	}
	// Turn it back into a version 1 database that holds the same data.
	for _, q := range append(undoV6(), "DROP TRIGGER key_peers_added", "DROP TRIGGER key_peers_trusted", "DROP TABLE key_peers",
		"DROP INDEX events_time", "ALTER TABLE events DROP COLUMN peer_id", "ALTER TABLE events DROP COLUMN envelope",
		"ALTER TABLE events DROP COLUMN sip_message_length",
		"ALTER TABLE ip_addresses DROP COLUMN local_count", "ALTER TABLE ip_addresses DROP COLUMN peers",
		"ALTER TABLE ip_addresses DROP COLUMN trusted_peers", "ALTER TABLE called_numbers DROP COLUMN local_count",
		"ALTER TABLE called_numbers DROP COLUMN peers", "ALTER TABLE called_numbers DROP COLUMN trusted_peers", "DROP TABLE number_keys", "DROP TABLE event_counts", "DROP TABLE totals", "DROP TABLE new_numbers",
		"DROP TRIGGER ip_addresses_added", "DROP TRIGGER called_numbers_added", "PRAGMA user_version = 1") {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if _, err := OpenReadOnly(ctx, path); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Errorf("read-only open of an old schema: %v, want an upgrade hint", err)
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.MatchNumbers(ctx, "+46812345678")
	if err != nil || len(m) != 1 || m[0].Key != "0046812345678" {
		t.Errorf("national match after migration: %v %v", m, err)
	}
	if n, err := s.Count(ctx, store.IPAddresses, ""); n != 3 || err != nil {
		t.Errorf("IP total after migration: %d %v", n, err)
	}
	// Events captured here count as local sightings; the peer's does not (its signer was not
	// recorded before version 3, so it counts no peer either).
	for ip, local := range map[string]int64{"192.0.2.1": 1, "192.0.2.3": 0} {
		if a, ok, err := s.IP(ctx, ip); !ok || err != nil || a.Local != local || a.Peers != 0 {
			t.Errorf("%s after migration: %+v %v %v, want %d local", ip, a, ok, err, local)
		}
	}
	if a, ok, err := s.Number(ctx, "100"); !ok || err != nil || a.Local != 1 {
		t.Errorf("number 100 after migration: %+v %v %v, want 1 local", a, ok, err)
	}
	if top, _, err := s.Top(ctx, store.SIPMethods, "", 0); err != nil || !slices.Equal(top, []store.ValueCount{vc("OPTIONS", 3)}) {
		t.Errorf("method counts after migration: %v %v", top, err)
	}
}

// A version 3 database keeps the match keys computed before 000 was an international prefix;
// version 4 computes them anew, so a stored 9 000 46... number matches +46... at once.
func TestMigrationRecomputesMatchKeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v3.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "900046812118532")}); err != nil {
		t.Fatal(err)
	}
	// The keys version 3 wrote lacked the 000 reading: keep only those.
	for _, q := range append(undoV6(), "DELETE FROM number_keys WHERE match_key LIKE '%:812118532'",
		"ALTER TABLE events DROP COLUMN sip_message_length", "PRAGMA user_version = 3") {
		if _, err := s.w.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.version = 3 // what a binary of that schema reads
	if m, err := s.MatchNumbers(ctx, "+46812118532"); err != nil || len(m) != 0 {
		t.Fatalf("the version 3 keys already match: %v %v", m, err)
	}
	s.Close()
	// Between an upgrade of the binary and the node's restart, check and export still read it.
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatalf("read-only open of a version 3 database: %v", err)
	}
	if _, ok, err := ro.Number(ctx, "900046812118532"); !ok || err != nil {
		t.Errorf("exact lookup on version 3: %v %v", ok, err)
	}
	if err := ro.Events(ctx, func(*event.Event) error { return nil }); err != nil {
		t.Errorf("export from version 3: %v", err)
	}
	ro.Close()
	if have, want, err := SchemaVersion(ctx, path); have != 3 || want != len(migrations) || err != nil {
		t.Errorf("SchemaVersion = %d, %d, %v; want 3, %d", have, want, err, len(migrations))
	}
	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m, err := s.MatchNumbers(ctx, "+46812118532")
	if err != nil || len(m) != 1 || m[0].Key != "900046812118532" {
		t.Errorf("national match after migration to version 4: %v %v", m, err)
	}
}

func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	if _, err := OpenReadOnly(ctx, filepath.Join(t.TempDir(), "missing.db")); err == nil {
		t.Error("opened a missing database")
	}
	path := filepath.Join(t.TempDir(), "d.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, []*event.Event{ev(1, "192.0.2.1", "100")}); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, ok, err := ro.IP(ctx, "192.0.2.1"); !ok || err != nil {
		t.Errorf("read-only lookup: %v %v", ok, err)
	}
	if err := ro.Write(ctx, []*event.Event{ev(2, "192.0.2.1", "100")}); err == nil {
		t.Error("wrote through a read-only store")
	}
	s.Close()
}

func vc(v string, n int64) store.ValueCount { return store.ValueCount{Value: v, Count: n} }

// A client reading a long list slowly while capture writes: the list must not hold a read
// transaction (the WAL could then not be checkpointed and grew from 11 MB to 771 MB in 15 s),
// so the WAL stays under its limit; and the list is one snapshot: every number stored when it
// began appears exactly once, though numbers are seen again (they move to the top) and new
// ones come in while it is read.
func TestSlowListReaderDoesNotPinTheWAL(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const before = 3000
	seed := make([]*event.Event, before)
	for i := range seed {
		seed[i] = ev(i, "192.0.2.1", fmt.Sprintf("00461%06d", i))
	}
	if err := s.Write(ctx, seed); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var maxWAL atomic.Int64
	var written atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		msg := strings.Repeat("x", 4000)
		for i := 0; ; i++ {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			batch := make([]*event.Event, 1000)
			for j := range batch {
				// Half see a stored number again, half are new.
				num := fmt.Sprintf("00461%06d", (i*1000+j)%before)
				if j%2 == 1 {
					num = fmt.Sprintf("00462%06d", i*1000+j)
				}
				e := ev(before+i*1000+j, "198.51.100.1", num)
				e.SIPMessage = msg
				batch[j] = e
			}
			if err := s.Write(ctx, batch); err != nil {
				writerDone <- err
				return
			}
			written.Add(int64(len(batch) * len(msg)))
			if fi, err := os.Stat(s.path + "-wal"); err == nil && fi.Size() > maxWAL.Load() {
				maxWAL.Store(fi.Size())
			}
		}
	}()
	seen := map[string]int{}
	const stallUntil = 40 << 20
	err := s.Each(ctx, store.CalledNumbers, store.ListOptions{}, func(a store.Aggregate) error {
		seen[a.Key]++
		if len(seen) == before/2 {
			// A client that stops reading half-way while capture writes 40 MiB.
			for deadline := time.Now().Add(time.Minute); written.Load() < stallUntil && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		return nil
	})
	close(stop)
	if werr := <-writerDone; werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := range before {
		if n := seen[fmt.Sprintf("00461%06d", i)]; n != 1 {
			t.Fatalf("number %d listed %d times, want once", i, n)
		}
	}
	t.Logf("listed %d numbers while %d MiB were written; WAL peaked at %d MiB", len(seen), written.Load()>>20, maxWAL.Load()>>20)
	if written.Load() < stallUntil {
		t.Fatalf("only %d MiB written during the list: the test proves nothing", written.Load()>>20)
	}
	// Held open, the list would keep every frame written since it began in the WAL.
	if maxWAL.Load() > written.Load()/2 || maxWAL.Load() > walSizeLimit {
		t.Errorf("WAL peaked at %d MiB while %d MiB were written during a stalled list: it was not checkpointed",
			maxWAL.Load()>>20, written.Load()>>20)
	}
}

// A store opened read-only (dialtrap's tools) pages long lists by their order: the same
// entries as one query, in the same order, with limits and offsets.
func TestReadOnlyListPages(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "d.db")
	w, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*event.Event, 2500)
	for i := range batch {
		batch[i] = ev(i%1200, "192.0.2.1", fmt.Sprintf("5%05d", i)) // equal last_seen for many
		batch[i].UUID = fmt.Sprintf("00000000-0000-4000-9000-%012d", i)
	}
	if err := w.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	defer w.Close()
	for _, o := range []store.ListOptions{{}, {Limit: 1500}, {Offset: 700}, {Limit: 2000, Offset: 100}, {Since: ev(600, "", "").Timestamp}} {
		var want, got []string
		w.Each(ctx, store.CalledNumbers, o, func(a store.Aggregate) error { want = append(want, a.Key); return nil })
		if err := ro.Each(ctx, store.CalledNumbers, o, func(a store.Aggregate) error { got = append(got, a.Key); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) || len(got) == 0 {
			t.Errorf("%+v: read-only lists %d entries, the node's store %d, or another order", o, len(got), len(want))
		}
	}
}

// Long lists are read through a pool of their own: when every snapshot connection is held by
// a slow reader, one more list is told the store is busy (the API answers 503), and the
// statistics, counts and the writer go on.
func TestSlowReadersHoldOnlyTheirOwnPool(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	batch := make([]*event.Event, 2*listPage)
	for i := range batch {
		batch[i] = ev(i, "192.0.2.1", fmt.Sprintf("7%06d", i))
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	old := snapshotWait
	snapshotWait = 100 * time.Millisecond
	defer func() { snapshotWait = old }()
	release := make(chan struct{})
	started := make(chan struct{}, snapshotStreams)
	done := make(chan error, snapshotStreams)
	for range snapshotStreams {
		go func() {
			first := true
			done <- s.Each(ctx, store.CalledNumbers, store.ListOptions{}, func(store.Aggregate) error {
				if first {
					first = false
					started <- struct{}{}
					<-release // a client that stopped reading
				}
				return nil
			})
		}()
	}
	for range snapshotStreams {
		<-started
	}
	err := s.Each(ctx, store.CalledNumbers, store.ListOptions{}, func(store.Aggregate) error { return nil })
	if !errors.Is(err, store.ErrBusy) {
		t.Errorf("one more long list: %v, want ErrBusy", err)
	}
	if _, _, err := s.Top(ctx, store.SIPMethods, "", 10); err != nil {
		t.Errorf("statistics while lists hold their pool: %v", err)
	}
	if err := s.Write(ctx, []*event.Event{ev(99999, "192.0.2.9", "1")}); err != nil {
		t.Errorf("a write while lists hold their pool: %v", err)
	}
	close(release)
	for range snapshotStreams {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// Without room for a snapshot (a read-only temp directory), long lists are paged by key: whole
// and in order all the same, and the store says why.
func TestListWithoutSnapshotRoom(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	batch := make([]*event.Event, 2500)
	for i := range batch {
		batch[i] = ev(i, "192.0.2.1", fmt.Sprintf("8%05d", i))
	}
	if err := s.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var want []string
	s.Each(ctx, store.CalledNumbers, store.ListOptions{}, func(a store.Aggregate) error { want = append(want, a.Key); return nil })
	old := createSnapshot
	createSnapshot = func(context.Context, *sql.Conn, string, ...any) error {
		return errors.New("unable to open a temporary database file")
	}
	defer func() { createSnapshot = old }()
	var got []string
	if err := s.Each(ctx, store.CalledNumbers, store.ListOptions{}, func(a store.Aggregate) error { got = append(got, a.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) || len(got) != 2500 {
		t.Errorf("paged by key: %d entries, want the %d of the snapshot, in order", len(got), len(want))
	}
	if s.SnapshotError() == nil {
		t.Error("the store does not say snapshots failed")
	}
}

// An import of two identical records (the same derived UUID) in one batch counts one.
func TestWriteCountDuplicatesInABatch(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	var batch []*event.Event // eight: one insert statement
	for i := range 7 {
		batch = append(batch, ev(i+1, fmt.Sprintf("192.0.2.%d", i+1), "100"))
	}
	batch = append(batch, ev(1, "192.0.2.1", "100"))
	if n, err := s.WriteCount(ctx, batch); n != 7 || err != nil {
		t.Errorf("WriteCount = %d, %v; want 7", n, err)
	}
	if a, _, _ := s.IP(ctx, "192.0.2.1"); a.Count != 1 {
		t.Errorf("192.0.2.1 counted %d times, want once", a.Count)
	}
}

// undoV7 turns a database of schema 10 back into one of schema 6 (8 added an index to the
// targets table that 9 dropped, with the numbers' count index of 7).
func undoV7() []string {
	return []string{"ALTER TABLE events DROP COLUMN repeat_count", "DROP INDEX called_numbers_target", "ALTER TABLE called_numbers DROP COLUMN target",
		"ALTER TABLE called_numbers DROP COLUMN target_country", "ALTER TABLE called_numbers DROP COLUMN target_type",
		"ALTER TABLE events DROP COLUMN tool", "ALTER TABLE events DROP COLUMN ua_spoofed",
		"ALTER TABLE events DROP COLUMN payload", "DROP TABLE minute_counts", "DROP TABLE campaigns"}
}

// undoV6 turns a database of schema 10 back into one of schema 5.
func undoV6() []string {
	q := append(undoV7(), "DROP INDEX ip_addresses_seq",
		"ALTER TABLE events DROP COLUMN source_verified", "DELETE FROM totals WHERE name IN ('change_seq', 'epoch')")
	for _, t := range []string{"ip_addresses", "called_numbers"} {
		for _, c := range []string{"verified_count", "verified_local", "verified_trusted", "seq"} {
			q = append(q, "ALTER TABLE "+t+" DROP COLUMN "+c)
		}
	}
	return q
}
