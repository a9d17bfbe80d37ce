package postgres

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/storetest"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a store on a fresh database of the test binary's server.
func open(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.Get(t).Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend { return open(t) })
}

// ev is a probe at base+at from ip to number.
func ev(at time.Duration, ip, number string) *event.Event {
	return &event.Event{
		AppName: event.AppName, AppVersion: "test", Timestamp: event.FormatTime(base.Add(at)),
		UUID: uuid.Must(uuid.NewV7()).String(), NodeID: "0190f4a2-0000-7000-8000-000000000001",
		CollectedMethod: event.Responsive, Transport: event.UDP, SourceIP: ip, SourcePort: 5070,
		DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: number, SIPMethod: "INVITE",
		SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:" + number + "@192.0.2.1 SIP/2.0\r\n\r\n",
		Tool: "sipvicious",
	}
}

var base = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// Nodes starting together on one new database migrate it once; then, writing the same
// events and their own at once through pools of their own, they store and count each once.
func TestManyNodes(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Get(t).Database(t)
	const nodes = 4
	stores := make([]*Store, nodes)
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = Open(ctx, url)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	var shared []*event.Event
	for i := range 200 {
		shared = append(shared, ev(time.Duration(i)*time.Second, fmt.Sprintf("198.51.100.%d", i%5), fmt.Sprint(100+i%9)))
	}
	added := make([]int, nodes)
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := slices.Clone(shared)
			for j := range 50 {
				mine = append(mine, ev(time.Duration(j)*time.Second, fmt.Sprintf("198.51.100.%d", j%5), "100"))
			}
			for len(mine) > 0 {
				n := min(40, len(mine))
				got, err := s.WriteCount(ctx, mine[:n])
				if err != nil {
					errs[i] = err
					return
				}
				added[i] += got
				mine = mine[n:]
			}
		}()
	}
	wg.Wait()
	total := 0
	for i := range stores {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		total += added[i]
	}
	want := int64(200 + nodes*50)
	if int64(total) != want {
		t.Errorf("the nodes say they added %d events, want %d", total, want)
	}
	s := stores[0]
	if n, err := s.CountEvents(ctx); n != want || err != nil {
		t.Errorf("%d events (%v), want %d", n, err, want)
	}
	var sum int64
	must(t, s.Each(ctx, store.IPAddresses, store.ListOptions{}, func(a store.Aggregate) error { sum += a.Count; return nil }))
	if sum != want {
		t.Errorf("IP counts sum to %d, want %d", sum, want)
	}
	if n, err := s.Count(ctx, store.IPAddresses, ""); n != 5 || err != nil {
		t.Errorf("%d IPs (%v), want 5", n, err)
	}
	sum = 0
	must(t, s.Campaigns(ctx, store.ListOptions{}, func(c store.Campaign) error { sum += c.Count; return nil }))
	if n, err := s.CountCampaigns(ctx, ""); n != 5 || sum != want || err != nil {
		t.Errorf("%d campaigns counting %d (%v), want 5 counting %d", n, sum, err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// When the server goes away a write fails and says where; once it is back, the batch
// written again (the hub retries it) is stored and counted once, whether or not the first
// try had committed.
func TestServerRestart(t *testing.T) {
	ctx := context.Background()
	srv := pgtest.Get(t)
	s := open(t)
	committed := []*event.Event{ev(0, "198.51.100.1", "100"), ev(time.Second, "198.51.100.1", "100")}
	must(t, s.Write(ctx, committed))
	must(t, srv.Stop())
	t.Cleanup(func() { srv.Start() })
	lost := []*event.Event{ev(2*time.Second, "198.51.100.1", "100")}
	err := s.Write(ctx, lost)
	if err == nil || !strings.Contains(err.Error(), srv.Addr()) {
		t.Fatalf("write with the server down: %v, want an error naming %s", err, srv.Addr())
	}
	must(t, srv.Start())
	retry := append(slices.Clone(committed), lost...)
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The pool's connections died with the server: the first try after may fail.
		if n, err = s.WriteCount(ctx, retry); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || n != 1 {
		t.Fatalf("retry after the restart added %d (%v), want 1", n, err)
	}
	if a, _, err := s.IP(ctx, "198.51.100.1"); a.Count != 3 || err != nil {
		t.Errorf("IP counted %d (%v), want 3", a.Count, err)
	}
}

// Events go into a partition per day; retention drops the days before the cutoff whole and
// deletes from the day it falls in a chunk at a time; counts stay.
func TestPartitionRetention(t *testing.T) {
	ctx := context.Background()
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return base.Add(5 * 24 * time.Hour) }
	s := open(t)
	var batch []*event.Event
	for d := range 5 {
		for h := range 4 {
			batch = append(batch, ev(time.Duration(d)*24*time.Hour+time.Duration(h)*time.Hour, "198.51.100.1", "100"))
		}
	}
	old := ev(-200*24*time.Hour, "198.51.100.1", "100") // before the floor: events_old
	ahead := ev(8*24*time.Hour, "198.51.100.1", "100")  // after tomorrow: the default partition
	batch = append(batch, ahead)
	batch = append(batch, old)
	must(t, s.Write(ctx, batch))
	parts := func() []string {
		rows, err := s.pool.Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'events'::regclass ORDER BY 1`)
		must(t, err)
		p, err := pgx.CollectRows(rows, pgx.RowTo[string])
		must(t, err)
		return p
	}
	want := []string{"events_20261123", "events_20261124", "events_20261125", "events_20261126", "events_20261127",
		"events_20261128", "events_20261129", "events_default", "events_old"}
	if got := parts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("partitions %v, want %v (the batch's days, today and tomorrow)", got, want)
	}
	for _, c := range []struct {
		part string
		want int
	}{{"events_default", 1}, {"events_old", 1}, {"events_20261126", 4}} {
		var n int
		must(t, s.pool.QueryRow(ctx, `SELECT count(*) FROM `+c.part).Scan(&n))
		if n != c.want {
			t.Errorf("%d events in %s, want %d", n, c.part, c.want)
		}
	}
	// The cutoff falls on day 3 (2026-11-26) at 02:30: days 0-2 go whole (12 events),
	// events_old is emptied (1), then day 3's first 3 hours in chunks of 2.
	cutoff := event.FormatTime(base.Add(3*24*time.Hour + 2*time.Hour + 30*time.Minute))
	n, err := s.PruneEvents(ctx, cutoff, 2)
	if err != nil || n != 15 {
		t.Fatalf("first chunk deleted %d (%v), want 12 in dropped days, 1 before the floor and 2 more", n, err)
	}
	if got := parts(); slices.Contains(got, "events_20261125") || !slices.Contains(got, "events_20261126") || !slices.Contains(got, "events_old") {
		t.Errorf("partitions after retention %v", got)
	}
	n, err = s.PruneEvents(ctx, cutoff, 2)
	if err != nil || n != 1 {
		t.Errorf("second chunk deleted %d (%v), want 1", n, err)
	}
	if left, err := s.CountEvents(ctx); left != 6 || err != nil {
		t.Errorf("%d events left (%v), want 6", left, err)
	}
	// A node opened later on the same database keeps the floor.
	defer func(f func() time.Time) { now = f }(now)
	now = func() time.Time { return base.Add(50 * 24 * time.Hour) }
	s2, err := Open(ctx, s.pool.Config().ConnString())
	must(t, err)
	if s2.floor != s.floor {
		t.Errorf("floor %s after a reopen, was %s", s2.floor, s.floor)
	}
	s2.Close()
	if a, _, err := s.IP(ctx, "198.51.100.1"); a.Count != 22 || a.FirstSeen != old.Timestamp || err != nil {
		t.Errorf("aggregate after retention %+v (%v)", a, err)
	}
	// A day dropped and written again (a late peer event) is made anew.
	must(t, s.Write(ctx, []*event.Event{ev(time.Hour+time.Minute, "198.51.100.1", "100")}))
	if got := parts(); !slices.Contains(got, "events_20261123") {
		t.Errorf("partitions after a late event %v", got)
	}
}

// No message prints the password of the URL.
func TestPasswordNeverPrinted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, url := range []string{
		"postgres://dialtrap:s3cretPW@127.0.0.1:1/dialtrap?connect_timeout=2",
		"postgres://dialtrap:s3cretPW@127.0.0.1:1/dialtrap?sslmode=nonsense",
		"postgres://dialtrap:s3cretPW@127.0.0.1:99999/dialtrap",
		// A password with an unencoded @, and one that is not valid percent-encoding: pgx
		// would quote the URL with only the text before the first @ hidden.
		"postgres://dialtrap:s3c@retPW@127.0.0.1:1/dialtrap?connect_timeout=2",
		"postgres://dialtrap:s3c@retPW%1@127.0.0.1:1/dialtrap",
		"postgres://dialtrap:s3c/retPW@127.0.0.1:1/dialtrap",
		// An unencoded / first in the password: url.Parse finds no user at all, and the
		// password in the path.
		"postgres://dialtrap:/s3cretPW@127.0.0.1:1/dialtrap",
		"postgres://dialtrap:12/34s3cretPW@127.0.0.1:1/dialtrap",
	} {
		_, err := Open(ctx, url)
		t.Log(err)
		if err == nil || strings.Contains(err.Error(), "s3cretPW") || strings.Contains(err.Error(), "retPW") {
			t.Errorf("Open(%s): %v", url[:22], err)
		}
		// One line, though pgx tries TLS then plain text (sslmode=prefer, the default).
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Open(%s): the message is more than one line: %q", url[:22], err)
		}
	}
}

// An @ in the query is no password: such a URL is read, not refused.
func TestAtInQueryIsFine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Open(ctx, "postgres://dialtrap:s3cretPW@127.0.0.1:1/dialtrap?connect_timeout=2&application_name=trap@site1")
	if err == nil || strings.Contains(err.Error(), "cannot be read") || strings.Contains(err.Error(), "s3cretPW") {
		t.Errorf("Open: %v", err)
	}
}

// A first connection the server refuses says what to fix.
func TestConnectHint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := pgtest.Get(t)
	_, err := Open(ctx, strings.Replace(srv.URL("nosuchdb"), "?sslmode=disable", "", 1))
	if err == nil || !strings.Contains(err.Error(), "create the database (createdb -O postgres nosuchdb)") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Open of a missing database: %q", err)
	}
	_, err = Open(ctx, "postgres://dialtrap:s3cretPW@127.0.0.1:1/dialtrap?connect_timeout=2")
	if err == nil || !strings.Contains(err.Error(), "is the server running") {
		t.Errorf("Open of a closed port: %q", err)
	}
}

// Messages keep every byte (NUL too); short text fields keep all but NUL.
func TestAttackerBytes(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	e := ev(0, "198.51.100.1", "1\x002")
	e.SIPMessage = "OPTIONS \x00\x01\xc3\xa9 SIP/2.0\r\n"
	e.SIPUserAgent = "a\x00b"
	must(t, s.Write(ctx, []*event.Event{e}))
	var got []*event.Event
	must(t, s.Events(ctx, func(e *event.Event) error { got = append(got, e); return nil }))
	if len(got) != 1 || got[0].SIPMessage != e.SIPMessage || got[0].SIPUserAgent != "a\uFFFDb" {
		t.Fatalf("read back %+v", got)
	}
	if _, ok, err := s.Number(ctx, "1\x002"); !ok || err != nil {
		t.Errorf("number with NUL not found (%v)", err)
	}
}

// The read-only store (dialtrap check, export) refuses a database without this version's
// schema, and writes.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Get(t).Database(t)
	if _, err := OpenReadOnly(ctx, url); err == nil || !strings.Contains(err.Error(), "schema version 0") {
		t.Fatalf("read-only open of an empty database: %v", err)
	}
	w, err := Open(ctx, url)
	must(t, err)
	must(t, w.Write(ctx, []*event.Event{ev(0, "198.51.100.1", "100")}))
	w.Close()
	r, err := OpenReadOnly(ctx, url)
	must(t, err)
	defer r.Close()
	if _, ok, err := r.IP(ctx, "198.51.100.1"); !ok || err != nil {
		t.Errorf("lookup: %v %v", ok, err)
	}
	if err := r.Write(ctx, []*event.Event{ev(0, "198.51.100.1", "100")}); err == nil {
		t.Error("a read-only store wrote")
	}
}

// An event the database refuses for good fails alone: the events before it are stored, and
// the hub is told which one to count as refused.
func TestRefusedEvent(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	bad := fromPeerEv(ev(time.Second, "198.51.100.2", "100"), "12D3Koo\xffW") // not UTF-8: nothing checks a peer ID's bytes here
	batch := []*event.Event{ev(0, "198.51.100.1", "100"), bad, ev(2*time.Second, "198.51.100.3", "100")}
	err := s.Write(ctx, batch)
	var be *hub.BadEventError
	if !errors.As(err, &be) || be.Index != 1 {
		t.Fatalf("Write: %v, want a BadEventError for event 1", err)
	}
	if _, ok, err := s.IP(ctx, "198.51.100.1"); !ok || err != nil {
		t.Errorf("the event before the refused one: stored %v (%v)", ok, err)
	}
	must(t, s.Write(ctx, batch[2:])) // what the hub does next
	if n, err := s.CountEvents(ctx); n != 2 || err != nil {
		t.Errorf("%d events (%v), want 2", n, err)
	}
}

func fromPeerEv(e *event.Event, peer string) *event.Event {
	e.FromPeer, e.Peer, e.Sealed = true, peer, []byte("envelope")
	return e
}

// The change sequence never passes a writer still running: a batch that took its
// transaction id before another committed, and commits after, is still ahead of every
// cursor a stream took meanwhile.
func TestChangeSeqWaitsForRunningWriters(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	must(t, s.Write(ctx, []*event.Event{ev(0, "198.51.100.1", "100")}))
	slow, err := s.pool.Begin(ctx) // a writer that began first and commits last
	must(t, err)
	defer slow.Rollback(ctx)
	var slowID int64
	must(t, slow.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&slowID))
	must(t, s.Write(ctx, []*event.Event{ev(time.Second, "198.51.100.2", "100")}))
	page, err := s.FeedPage(ctx, store.IPAddresses, store.FeedFilter{}, store.BySeq, store.FeedItem{}, 10)
	must(t, err)
	if len(page) != 2 || page[1].Seq <= slowID {
		t.Fatalf("feed %+v: the later write should have a sequence above %d", page, slowID)
	}
	_, seq, err := s.ChangeSeq(ctx)
	if err != nil || seq >= slowID {
		t.Errorf("ChangeSeq %d (%v) while transaction %d runs, want below it", seq, err, slowID)
	}
	must(t, slow.Rollback(ctx))
	if _, seq, err = s.ChangeSeq(ctx); err != nil || seq < page[1].Seq {
		t.Errorf("ChangeSeq %d (%v) once it ended, want at least %d", seq, err, page[1].Seq)
	}
}

// A list longer than a page streams whole, in order, once.
func TestLongList(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const n = 2*listPage + 500
	for i := 0; i < n; i += 1000 {
		must(t, s.Write(ctx, scanIPs(min(1000, n-i), i)))
	}
	var got []string
	must(t, s.Each(ctx, store.IPAddresses, store.ListOptions{}, func(a store.Aggregate) error { got = append(got, a.Key); return nil }))
	if len(got) != n || got[0] != ipOf(n-1) || got[n-1] != ipOf(0) {
		t.Fatalf("%d keys, first %s, last %s; want %d from %s to %s", len(got), got[0], got[len(got)-1], n, ipOf(n-1), ipOf(0))
	}
	var limited int
	must(t, s.Each(ctx, store.IPAddresses, store.ListOptions{Limit: listPage + 10, Offset: 5}, func(a store.Aggregate) error {
		if a.Key != got[5+limited] {
			t.Fatalf("entry %d is %s, want %s", limited, a.Key, got[5+limited])
		}
		limited++
		return nil
	}))
	if limited != listPage+10 {
		t.Errorf("%d entries with a limit of %d", limited, listPage+10)
	}
}
