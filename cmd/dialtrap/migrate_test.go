package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/intel"
	"github.com/dialtrap/dialtrap/internal/store"
)

// migrateBackends are the stores migrate is tested between. Each row makes a new, empty
// store and says which event fields it does not keep per event.
//
// A PostgreSQL row, once internal/store/postgres is on main and openStore opens it, needs a
// server on loopback (a test database per call, dropped at cleanup, e.g. from a URL in
// DIALTRAP_TEST_POSTGRES_URL that the test command sets up) and returns that database's
// postgres:// URL; its notKept is what that backend drops (Trusted, if kept per key there too).
var migrateBackends = []struct {
	name    string
	newSpec func(t *testing.T) string
	notKept func(e *event.Event)
}{
	{"sqlite", func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "dialtrap.db") },
		func(e *event.Event) {
			e.Trusted = false // kept per key (key_peers), rebuilt by FillTrusted: the aggregates compare it
		}},
	{"postgres", func(t *testing.T) string { return pgtest.Get(t).Database(t) },
		func(e *event.Event) {
			e.Trusted = false // kept per key there too
		}},
}

// migratePairs are the (source, destination) pairs: every backend into every one.
func migratePairs() (pairs [][2]int) {
	for i := range migrateBackends {
		for j := range migrateBackends {
			pairs = append(pairs, [2]int{i, j})
		}
	}
	return pairs
}

var migrateBase = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// testEvents are n events as a node stores them: most captured here, some from a trusted and
// an untrusted peer, some verified, with tools, payloads and folded repeats; two share each
// timestamp, so that a batch can end between them.
func testEvents(n, from int) []*event.Event {
	out := make([]*event.Event, n)
	for k := range n {
		i := from + k
		e := &event.Event{
			AppName: event.AppName, AppVersion: "test", Timestamp: event.FormatTime(migrateBase.Add(time.Duration(i/2) * time.Second)),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "0190f4a2-0000-7000-8000-000000000001",
			CollectedMethod: event.Responsive, Transport: event.UDP,
			SourceIP: fmt.Sprintf("198.51.100.%d", i%37), SourcePort: 5060 + i%7,
			DestinationIP: "192.0.2.1", DestinationPort: 5060, CalledNumber: fmt.Sprintf("00468121185%02d", i%23),
			SIPMethod: "INVITE", SIPUserAgent: "friendly-scanner", SIPMessage: fmt.Sprintf("INVITE sip:%d@192.0.2.1 SIP/2.0\r\n\r\n", i),
			Tool: "sipvicious",
		}
		switch i % 5 {
		case 1:
			e.Transport, e.SourceVerified = event.TCP, true
		case 2:
			e.Payload, e.UASpoofed = []event.Payload{{Kind: "sqli", Where: "to"}}, true
		case 3:
			e.CalledNumber = event.NotFound
		}
		if i%11 == 0 {
			e.RepeatCount = int64(i%4 + 2)
		}
		switch i % 3 {
		case 1: // a trusted peer's
			e.FromPeer, e.Peer, e.Trusted, e.Sealed = true, "12D3KooWTrusted", true, []byte("envelope "+e.UUID)
		case 2:
			if i%2 == 0 { // an untrusted peer's
				e.FromPeer, e.Peer, e.Sealed = true, "12D3KooWOther", []byte("envelope "+e.UUID)
			}
		}
		out[k] = e
	}
	return out
}

// fillStore writes events into a new store of the spec, in shuffled batches (ids then differ
// from time order, as with peers catching up), and returns it open.
func fillStore(t *testing.T, spec string, events []*event.Event) migrateStore {
	t.Helper()
	st := openTestStore(t, spec)
	shuffled := append([]*event.Event(nil), events...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for len(shuffled) > 0 {
		n := min(len(shuffled), 400)
		if _, err := st.WriteCount(context.Background(), shuffled[:n]); err != nil {
			t.Fatal(err)
		}
		shuffled = shuffled[n:]
	}
	return st
}

func openTestStore(t *testing.T, spec string) migrateStore {
	t.Helper()
	s, err := parseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStore(context.Background(), s, false)
	if err != nil {
		t.Fatal(err)
	}
	st.SetLabeler(intel.NewLabeler("DE"))
	t.Cleanup(func() { st.Close() })
	return st
}

// readAll pages through a store's events in migrate's order.
func readAll(t *testing.T, st migrateSource) []*event.Event {
	t.Helper()
	var all []*event.Event
	since, after := "", int64(0)
	for {
		n := 0
		if err := st.Recent(context.Background(), since, after, 1000, func(e *event.Event, id int64) error {
			all = append(all, e)
			since, after = e.Timestamp, id
			n++
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if n < 1000 {
			// Events of one instant come in the order each store gave them ids (SQLite:
			// as written; PostgreSQL: by UUID within a batch): compared by (time, UUID).
			slices.SortStableFunc(all, func(a, b *event.Event) int {
				return cmp.Or(strings.Compare(a.Timestamp, b.Timestamp), strings.Compare(a.UUID, b.UUID))
			})
			return all
		}
	}
}

// storeLists are a store's IP and number aggregates, and counts by tool and country.
func storeLists(t *testing.T, st migrateSource) map[string]any {
	t.Helper()
	ctx := context.Background()
	out := map[string]any{}
	for _, l := range []store.List{store.IPAddresses, store.CalledNumbers} {
		var as []store.Aggregate
		if err := st.Each(ctx, l, store.ListOptions{}, func(a store.Aggregate) error { as = append(as, a); return nil }); err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint("list ", l)] = as
	}
	type topper interface {
		Top(ctx context.Context, d store.Dimension, since string, limit int) ([]store.ValueCount, int64, error)
	}
	for _, d := range []store.Dimension{store.Tools, store.Countries, store.TargetCountries, store.Payloads} {
		top, _, err := st.(topper).Top(ctx, d, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprint("top ", d)] = top
	}
	return out
}

func migrateRun(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	// A PostgreSQL destination's default checkpoint is in the working directory: each test
	// has its own.
	if _, done := testDirs.LoadOrStore(t, true); !done {
		t.Chdir(t.TempDir())
	}
	var o, e strings.Builder
	code = run(append([]string{"migrate"}, args...), &o, &e)
	return code, o.String(), e.String()
}

var testDirs sync.Map // *testing.T: the tests that moved to a directory of their own

// Every event goes across with its fields and peers' provenance, and the destination's
// aggregates (trusted peers and verified trusted sightings too) and statistics are the
// source's. A second hop (and back, between backends) keeps them; a run after the end copies
// only what the source got since.
func TestMigrateRoundTrip(t *testing.T) {
	for _, p := range migratePairs() {
		from, to := migrateBackends[p[0]], migrateBackends[p[1]]
		t.Run(from.name+"-"+to.name, func(t *testing.T) {
			events := testEvents(2500, 0)
			srcSpec, dstSpec, backSpec := from.newSpec(t), to.newSpec(t), from.newSpec(t)
			src := fillStore(t, srcSpec, events)
			code, out, errOut := migrateRun(t, "--from", srcSpec, "--to", dstSpec, "--batch", "300", "--home-country", "DE", "-q")
			if code != 0 || errOut != "" || !strings.Contains(out, "copied 2500 events") || !strings.Contains(out, "verified") {
				t.Fatalf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
			}
			code, out, errOut = migrateRun(t, "--from", dstSpec, "--to", backSpec, "--batch", "1000", "--home-country", "DE", "-q")
			if code != 0 || !strings.Contains(out, "verified") {
				t.Fatalf("back: exit %d\nstdout %s\nstderr %s", code, out, errOut)
			}
			dst, back := openTestStore(t, dstSpec), openTestStore(t, backSpec)

			want := readAll(t, src)
			if len(want) != len(events) {
				t.Fatalf("source holds %d events, want %d", len(want), len(events))
			}
			byUUID := map[string]*event.Event{}
			for _, e := range events {
				c := *e
				from.notKept(&c)
				byUUID[e.UUID] = &c
			}
			for _, e := range want {
				if !reflect.DeepEqual(e, byUUID[e.UUID]) {
					t.Fatalf("the source store reads back\n%+v\nwritten\n%+v", e, byUUID[e.UUID])
				}
			}
			wantLists := storeLists(t, src)
			for name, st := range map[string]migrateStore{"destination": dst, "back": back} {
				if got := readAll(t, st); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: %d events differ from the source's %d", name, len(got), len(want))
					for i := range min(len(got), len(want)) {
						if !reflect.DeepEqual(got[i], want[i]) {
							t.Errorf("first difference, event %d:\n got %+v\nwant %+v", i, got[i], want[i])
							break
						}
					}
				}
				if got := storeLists(t, st); !reflect.DeepEqual(got, wantLists) {
					t.Errorf("%s: lists and statistics differ\n got %+v\nwant %+v", name, got, wantLists)
				}
			}

			// Finished, then run again: nothing to copy. New events at the source: only they.
			code, out, _ = migrateRun(t, "--from", srcSpec, "--to", dstSpec, "-q")
			if code != 0 || !strings.Contains(out, "copied 0 events") {
				t.Errorf("again: exit %d\n%s", code, out)
			}
			if _, err := src.WriteCount(context.Background(), testEvents(10, 5000)); err != nil {
				t.Fatal(err)
			}
			code, out, _ = migrateRun(t, "--from", srcSpec, "--to", dstSpec, "-q")
			if code != 0 || !strings.Contains(out, "copied 10 events") || !strings.Contains(out, "2510 copied in all") {
				t.Errorf("after 10 more: exit %d\n%s", code, out)
			}
		})
	}
}

// childEnv makes the test binary a migrate process that stops for good after a batch is
// committed and before its checkpoint is saved (see TestMain).
const childEnv = "DIALTRAP_TEST_MIGRATE_CHILD"

type childSpec struct {
	Args      []string
	StopAfter int    // batches
	Marker    string // written when stopped
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		var c childSpec
		if err := json.Unmarshal([]byte(spec), &c); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(99)
		}
		testHookCommitted = func(n int) {
			if n == c.StopAfter {
				os.WriteFile(c.Marker, nil, 0o600)
				time.Sleep(time.Hour) // until killed
			}
		}
		os.Exit(run(append([]string{"migrate"}, c.Args...), os.Stdout, os.Stderr))
	}
	if args := os.Getenv(importChildEnv); args != "" {
		importBulkOptions.MaxEvents = importChildBatch // many commits to be killed between
		os.Exit(run(strings.Split(args, "\n"), os.Stdout, os.Stderr))
	}
	os.Exit(pgtest.Wrap(m).Run()) // the PostgreSQL server of the tests stops at the end
}

// A migrate killed with SIGKILL after its 4th batch was committed, before that batch's
// checkpoint was saved, resumes from the 3rd: the 4th is copied again and counted once.
func TestMigrateResumesAfterKill(t *testing.T) {
	for _, p := range migratePairs() {
		from, to := migrateBackends[p[0]], migrateBackends[p[1]]
		t.Run(from.name+"-"+to.name, func(t *testing.T) {
			const n, batch = 5000, 500
			srcSpec, dstSpec := from.newSpec(t), to.newSpec(t)
			src := fillStore(t, srcSpec, testEvents(n, 0))
			state := filepath.Join(t.TempDir(), "state.json")
			args := []string{"--from", srcSpec, "--to", dstSpec, "--state", state, "--batch", fmt.Sprint(batch)}
			marker := filepath.Join(t.TempDir(), "stopped")
			spec, _ := json.Marshal(childSpec{Args: args, StopAfter: 4, Marker: marker})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
			var childErr strings.Builder
			cmd.Stdout, cmd.Stderr = &childErr, &childErr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.After(2 * time.Minute)
			for stopped := false; !stopped; {
				select {
				case err := <-exited:
					t.Fatalf("the child ended before its 4th batch (%v):\n%s", err, childErr.String())
				case <-deadline:
					cmd.Process.Kill()
					t.Fatalf("the child did not reach its 4th batch:\n%s", childErr.String())
				case <-time.After(10 * time.Millisecond):
					_, err := os.Stat(marker)
					stopped = err == nil
				}
			}
			// While it runs, the checkpoint is its own.
			if code, _, errOut := migrateRun(t, args...); code != exitRuntime || !strings.Contains(errOut, fmt.Sprintf("another dialtrap migrate (pid %d)", cmd.Process.Pid)) {
				t.Errorf("beside the running one: exit %d, %s", code, errOut)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-exited

			st, err := loadState(state)
			if err != nil || st == nil || st.Copied != 3*batch {
				t.Fatalf("checkpoint after the kill %+v (%v), want %d copied", st, err, 3*batch)
			}
			code, out, errOut := migrateRun(t, args...)
			if code != 0 || !strings.Contains(errOut, "resuming from the checkpoint") {
				t.Fatalf("resume: exit %d\nstdout %s\nstderr %s", code, out, errOut)
			}
			// 3500 read again from the checkpoint; the 500 of the 4th batch were already there.
			if want := fmt.Sprintf("copied %d events", n-3*batch); !strings.Contains(out, want) {
				t.Errorf("resume says %q, want %q", out, want)
			}
			if want := fmt.Sprintf("%d new in the destination; %d copied in all", n-4*batch, n); !strings.Contains(out, want) {
				t.Errorf("resume says %q, want %q", out, want)
			}
			dst := openTestStore(t, dstSpec)
			if got, want := storeLists(t, dst), storeLists(t, src); !reflect.DeepEqual(got, want) {
				t.Errorf("aggregates after the resume differ from the source's\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// A checkpoint is of one pair of stores: another source, or a destination replaced by a new
// database at the same path, is refused until --restart.
func TestMigrateRefusesAnotherPairsCheckpoint(t *testing.T) {
	b := migrateBackends[0]
	a, other, dst := b.newSpec(t), b.newSpec(t), b.newSpec(t)
	fillStore(t, a, testEvents(10, 0)).Close()
	fillStore(t, other, testEvents(10, 100)).Close()
	state := filepath.Join(t.TempDir(), "state.json")
	if code, out, errOut := migrateRun(t, "--from", a, "--to", dst, "--state", state, "-q"); code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut := migrateRun(t, "--from", other, "--to", dst, "--state", state, "-q")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "is the checkpoint of migrating") || !strings.Contains(errOut, "--restart") {
		t.Errorf("another source: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	code, out, errOut = migrateRun(t, "--from", other, "--to", dst, "--state", state, "-q", "--restart")
	if code != 0 || !strings.Contains(out, "copied 10 events") {
		t.Errorf("--restart: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	// The destination deleted and made anew: same path, another database.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(strings.TrimPrefix(dst, "sqlite:") + suffix)
	}
	if code, _, errOut := migrateRun(t, "--from", other, "--to", dst, "--state", state, "-q"); code != exitUsage || !strings.Contains(errOut, "epoch") {
		t.Errorf("a new destination at the same path: exit %d, stderr %s", code, errOut)
	}
}

// Usage errors exit 2 with one line saying what to do, and never print a password.
func TestMigrateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	fillStore(t, "sqlite:"+src, testEvents(3, 0)).Close()
	if err := os.Symlink(src, filepath.Join(dir, "link.sqlite")); err != nil {
		t.Fatal(err)
	}
	pg := "postgres://dialtrap:s3cret@127.0.0.1:5432/dialtrap?sslmode=disable"
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "give both --from and --to"},
		{[]string{"--from", src}, "give both --from and --to"},
		{[]string{"--from", src, "--to", "x.db", "extra"}, `unexpected argument "extra"`},
		{[]string{"--from", "mysql://u:s3cret@h/db", "--to", "x.db"}, "--from: \"mysql://u:xxxxx@h/db\": unknown kind of store"},
		{[]string{"--from", src, "--to", "events.txt"}, "--to: \"events.txt\": give sqlite:PATH"},
		{[]string{"--from", "sqlite:", "--to", "x.db"}, "names no file"},
		{[]string{"--from", "postgres://u:s3cret@/db", "--to", "x.db"}, "not a valid postgres:// URL"},
		{[]string{"--from", filepath.Join(dir, "missing.db"), "--to", "x.db"}, "--from: no database at"},
		{[]string{"--from", src, "--to", "sqlite:" + src}, "name the same store"},
		{[]string{"--from", src, "--to", filepath.Join(dir, "link.sqlite")}, "name the same store"},
		{[]string{"--from", pg, "--to", "postgresql://dialtrap:other@127.0.0.1/dialtrap"}, "name the same store"},
		{[]string{"--from", src, "--to", "x.db", "--batch", "0"}, "--batch 0"},
		{[]string{"--frobnicate"}, "unknown flag"},
	} {
		code, out, errOut := migrateRun(t, append(tt.args, "--state", filepath.Join(dir, "state.json"))...)
		if code != exitUsage || out != "" || !strings.HasPrefix(errOut, "dialtrap migrate: ") || !strings.Contains(errOut, tt.want) ||
			strings.Count(errOut, "\n") != 1 {
			t.Errorf("migrate %q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tt.args, code, out, errOut, tt.want)
		}
		if strings.Contains(errOut, "s3cret") {
			t.Errorf("migrate %q printed a password: %s", tt.args, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new.db")); err == nil {
		t.Error("a refused migration created its destination")
	}
}

func TestStoreSpecs(t *testing.T) {
	for _, tt := range []struct {
		spec, kind, shown, identity string
	}{
		{"sqlite:/var/lib/dialtrap/dialtrap.db", kindSQLite, "sqlite:/var/lib/dialtrap/dialtrap.db", "sqlite:/var/lib/dialtrap/dialtrap.db"},
		{"/var/lib/dialtrap/../dialtrap/x.sqlite3", kindSQLite, "sqlite:/var/lib/dialtrap/x.sqlite3", "sqlite:/var/lib/dialtrap/x.sqlite3"},
		{"sqlite:/srv/events", kindSQLite, "sqlite:/srv/events", "sqlite:/srv/events"}, // any name after sqlite:
		{"postgres://trap:s3cret@DB.example:5433/dialtrap?sslmode=require&password=s3cret", kindPostgres,
			"postgres://trap:xxxxx@DB.example:5433/dialtrap?password=xxxxx&sslmode=require", "postgres://trap@db.example:5433/dialtrap"},
		{"postgresql://trap@db.example/dialtrap", kindPostgres, "postgresql://trap@db.example/dialtrap", "postgres://trap@db.example:5432/dialtrap"},
		{"postgres:///dialtrap?host=/run/postgresql", kindPostgres, "postgres:///dialtrap?host=%2Frun%2Fpostgresql", "postgres://@(/run/postgresql)/dialtrap"},
	} {
		s, err := parseSpec(tt.spec)
		if err != nil || s.kind != tt.kind || s.String() != tt.shown || s.identity() != tt.identity {
			t.Errorf("parseSpec(%q) = %s %q %q (%v), want %s %q %q", tt.spec, s.kind, s, s.identity(), err, tt.kind, tt.shown, tt.identity)
		}
	}
}

// The bar on a terminal, a plain line every 5 s elsewhere, nothing with --quiet; only numbers.
func TestMigrateProgress(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		tty, quiet bool
		want       string
	}{
		{false, false, "dialtrap migrate: 7000 of 10000 events (70%), 1000 events/s, about 3s left\n"},
		{true, false, "\rmigrate  70% [=====================         ] 7000/10000 events  1000/s  ETA 3s\x1b[K\r\x1b[K"},
		{false, true, ""},
	} {
		var b strings.Builder
		p := newMigrateProgress(&b, tt.quiet, 1000)
		p.tty = tt.tty
		clock := now
		p.now, p.start, p.last = func() time.Time { return clock }, now, now
		clock = now.Add(time.Second)
		p.show(2000, 10000) // too soon for a plain line
		clock = now.Add(6 * time.Second)
		p.show(7000, 10000)
		p.finish()
		got := b.String()
		if tt.tty {
			got = got[strings.LastIndex(got[:len(got)-4], "\r"):] // the last redraw
		}
		if got != tt.want {
			t.Errorf("tty %v quiet %v: %q, want %q", tt.tty, tt.quiet, got, tt.want)
		}
	}
}

// counts is a store that only counts, for verify.
type counts struct {
	events int64
	lists  [2]int64
	seen   []int64 // the IP aggregates' counts
}

func (c counts) Recent(context.Context, string, int64, int, func(*event.Event, int64) error) error {
	return nil
}
func (c counts) CountEvents(context.Context) (int64, error) { return c.events, nil }
func (c counts) Count(_ context.Context, l store.List, _ string) (int64, error) {
	return c.lists[l], nil
}
func (c counts) WriteCount(context.Context, []*event.Event) (int, error) { return 0, nil }
func (c counts) SetLabeler(store.Labeler)                                {}
func (c counts) Each(_ context.Context, l store.List, _ store.ListOptions, fn func(store.Aggregate) error) error {
	for _, n := range c.seen {
		if err := fn(store.Aggregate{Count: n}); err != nil {
			return err
		}
	}
	return nil
}

func TestVerify(t *testing.T) {
	for _, tt := range []struct {
		name               string
		src, dst           counts
		copied, weight     int64
		empty              bool
		problems, warnings []string
	}{
		{name: "whole", src: counts{100, [2]int64{10, 5}, []int64{60, 40}}, dst: counts{100, [2]int64{10, 5}, nil},
			copied: 100, weight: 100, empty: true},
		{name: "folded events weigh their repeats", src: counts{100, [2]int64{10, 5}, []int64{160, 40}}, dst: counts{100, [2]int64{10, 5}, nil},
			copied: 100, weight: 200, empty: true},
		{name: "into a store that held events", src: counts{100, [2]int64{10, 5}, []int64{100}}, dst: counts{150, [2]int64{12, 5}, nil},
			copied: 100, weight: 100, empty: false},
		{name: "retention at the source", src: counts{60, [2]int64{10, 5}, []int64{100}}, dst: counts{60, [2]int64{8, 5}, nil},
			copied: 60, weight: 60, empty: true,
			warnings: []string{"count 100 sightings, its events only 60", "2 IP addresses of the source are not in the destination"}},
		{name: "retention during the migration", src: counts{90, [2]int64{10, 5}, []int64{100}}, dst: counts{100, [2]int64{10, 5}, nil},
			copied: 100, weight: 100, empty: true, warnings: []string{"10 events fewer than were copied"}},
		{name: "a node writing to the source", src: counts{110, [2]int64{11, 5}, []int64{110}}, dst: counts{100, [2]int64{10, 5}, nil},
			copied: 100, weight: 100, empty: true,
			problems: []string{"10 events that were not copied", "Stop the node and run the same command again", "1 IP addresses of the source are missing"}},
		{name: "something writing to the destination", src: counts{100, [2]int64{10, 5}, []int64{100}}, dst: counts{101, [2]int64{11, 5}, nil},
			copied: 100, weight: 100, empty: true,
			problems: []string{"1 more than were copied", "1 IP addresses more than the source"}},
		{name: "events gone from the destination", src: counts{100, [2]int64{10, 5}, []int64{100}}, dst: counts{90, [2]int64{9, 5}, nil},
			copied: 100, weight: 100, empty: true,
			problems: []string{"fewer than the 100 copied", "1 IP addresses of the source are missing"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := verify(context.Background(), tt.src, tt.dst, &migrateState{Copied: tt.copied, Weight: tt.weight, DestinationWasEmpty: tt.empty})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				kind      string
				got, want []string
			}{{"problems", v.problems, tt.problems}, {"warnings", v.warnings, tt.warnings}} {
				all := strings.Join(c.got, "\n")
				for _, w := range c.want {
					if !strings.Contains(all, w) {
						t.Errorf("%s lack %q:\n%s", c.kind, w, all)
					}
				}
				if len(c.want) == 0 && len(c.got) > 0 {
					t.Errorf("%s: %s", c.kind, all)
				}
			}
		})
	}
}

// Events written into the destination by someone else during the migration fail the
// verification: exit 3, saying what differs.
func TestMigrateVerificationFails(t *testing.T) {
	b := migrateBackends[0]
	srcSpec, dstSpec := b.newSpec(t), b.newSpec(t)
	fillStore(t, srcSpec, testEvents(1000, 0))
	other := openTestStore(t, dstSpec)
	testHookCommitted = func(n int) {
		if n == 1 {
			if _, err := other.WriteCount(context.Background(), testEvents(1, 9000)); err != nil {
				t.Error(err)
			}
		}
	}
	defer func() { testHookCommitted = nil }()
	code, out, errOut := migrateRun(t, "--from", srcSpec, "--to", dstSpec, "--batch", "300", "-q")
	if code != exitVerify || !strings.Contains(out, "copied 1000 events") || strings.Contains(out, "verified") ||
		!strings.Contains(errOut, "verification failed") || !strings.Contains(errOut, "1 more than were copied") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

// Retention deleted events of the source, aggregates kept their sightings: the migration
// succeeds and warns that those counts are not carried.
func TestMigrateWarnsOfRetention(t *testing.T) {
	b := migrateBackends[0]
	srcSpec, dstSpec := b.newSpec(t), b.newSpec(t)
	events := testEvents(1000, 0)
	events[0].SourceIP = "203.0.113.99" // only seen in the first hour's events
	src := fillStore(t, srcSpec, events)
	pruner, ok := src.(interface {
		PruneEvents(ctx context.Context, before string, limit int) (int64, error)
	})
	if !ok {
		t.Fatalf("%T has no PruneEvents", src)
	}
	if n, err := pruner.PruneEvents(context.Background(), events[200].Timestamp, 10000); n != 200 || err != nil {
		t.Fatalf("pruned %d (%v)", n, err)
	}
	var all, kept int64 // probes the events stand for (folded ones count their repeat_count)
	for i, e := range events {
		all += e.Weight()
		if i >= 200 {
			kept += e.Weight()
		}
	}
	code, out, errOut := migrateRun(t, "--from", srcSpec, "--to", dstSpec, "-q")
	if code != 0 || !strings.Contains(out, "copied 800 events") || !strings.Contains(out, "verified") ||
		!strings.Contains(errOut, fmt.Sprintf("warning: the source's IP aggregates count %d sightings, its events only %d", all, kept)) ||
		!strings.Contains(errOut, "1 IP addresses of the source are not in the destination") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
}

// A destination in a directory that does not exist yet: both it and the checkpoint go there.
func TestMigrateIntoNewDirectory(t *testing.T) {
	src := migrateBackends[0].newSpec(t)
	fillStore(t, src, testEvents(5, 0)).Close()
	dst := filepath.Join(t.TempDir(), "new", "dir", "dialtrap.db")
	if code, out, errOut := migrateRun(t, "--from", src, "--to", dst, "-q"); code != 0 || !strings.Contains(out, "verified") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if st, err := loadState(dst + ".migrate.json"); err != nil || st == nil || st.Copied != 5 || !st.DestinationWasEmpty {
		t.Errorf("checkpoint %+v (%v)", st, err)
	}
}
