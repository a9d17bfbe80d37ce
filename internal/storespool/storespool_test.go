package storespool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/backoff"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hub"
	"github.com/dialtrap/dialtrap/internal/spool"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv(killedWriterEnv) != "" {
		killedWriter()
		return
	}
	goleak.VerifyTestMain(m)
}

var errDown = errors.New("connection refused: the database is down")

// store is the test double of a database: it keeps each event_uuid once (as the real stores
// do) and counts how often each was written, so a test sees doubles the store would hide.
type store struct {
	mu      sync.Mutex
	down    bool
	partial int             // while down, the next failing write first writes this many
	refuse  map[string]bool // event_uuids refused for good (BadEventError)
	writes  map[string]int
	order   []string // event_uuids in the order first written
	got     []*event.Event
	calls   int
}

func newStore() *store { return &store{refuse: map[string]bool{}, writes: map[string]int{}} }

func (s *store) Name() string { return "db" }

func (s *store) Write(ctx context.Context, batch []*event.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.down {
		n := min(s.partial, len(batch))
		s.partial = 0
		s.keep(batch[:n])
		if n > 0 {
			return &hub.PartialError{Done: n, Err: errDown}
		}
		return errDown
	}
	for i, e := range batch {
		if s.refuse[e.UUID] {
			s.keep(batch[:i])
			return &hub.BadEventError{Index: i, Err: errors.New("value too long for the column")}
		}
	}
	s.keep(batch)
	return nil
}

func (s *store) keep(batch []*event.Event) {
	for _, e := range batch {
		if s.writes[e.UUID]++; s.writes[e.UUID] == 1 {
			s.order = append(s.order, e.UUID)
			s.got = append(s.got, e)
		}
	}
}

func (s *store) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *store) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

// check fails unless the store holds want, in that order, each written exactly once.
func (s *store) check(t *testing.T, want []*event.Event) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for u, n := range s.writes {
		if n != 1 {
			t.Errorf("event %s written %d times", u, n)
		}
	}
	if len(s.order) != len(want) {
		t.Fatalf("store holds %d events, want %d", len(s.order), len(want))
	}
	for i, e := range want {
		if s.order[i] != e.UUID {
			t.Fatalf("event %d in the store is %s, want %s: order broken", i, s.order[i], e.UUID)
		}
	}
}

func makeEvents(n int) []*event.Event {
	o := event.Origin{
		AppVersion: "test", NodeID: "node", Method: event.Passive, Transport: event.UDP,
		Source: netip.MustParseAddrPort("192.0.2.7:5070"), Dest: netip.MustParseAddrPort("198.51.100.1:5060"),
	}
	out := make([]*event.Event, n)
	for i := range out {
		number := fmt.Sprintf("0046812%06d", i)
		out[i] = event.New(o, time.Now(), number, "INVITE", "friendly-scanner", []byte("INVITE sip:"+number+"@x SIP/2.0\r\n\r\n"))
	}
	return out
}

func testConfig(t *testing.T) Config {
	return Config{
		Dir: filepath.Join(t.TempDir(), "store-spool"), MaxBytes: 64 << 20,
		MaxBatch: 100, Backoff: backoff.Policy{Min: time.Millisecond, Max: 20 * time.Millisecond},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func open(t *testing.T, inner hub.Sink, cfg Config) *Sink {
	t.Helper()
	s, err := New(inner, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// write writes events in batches of n, as the hub would, and fails the test on an error.
func write(t *testing.T, s *Sink, events []*event.Event, n int) {
	t.Helper()
	for len(events) > 0 {
		k := min(n, len(events))
		if err := s.Write(context.Background(), events[:k]); err != nil {
			t.Fatalf("Write: %v", err)
		}
		events = events[k:]
	}
}

func waitCaughtUp(t *testing.T, s *Sink) {
	t.Helper()
	testutil.Eventually(t, "the spool to drain into the store", 10*time.Second, func() bool {
		st := s.Stats()
		return !st.Spooling && st.Pending == 0
	})
}

// An outage: batches go to the spool while the store is down, Write never fails; once it is
// back the spool drains, in order, and writes go straight to the store again.
func TestOutageSpoolsThenCatchesUpInOrder(t *testing.T) {
	db := newStore()
	s := open(t, db, testConfig(t))
	events := makeEvents(3000)

	write(t, s, events[:500], 50)
	if st := s.Stats(); st.Spooling || st.Spooled != 0 {
		t.Fatalf("store up, yet %+v", st)
	}
	db.setDown(true)
	write(t, s, events[500:2000], 50)
	st := s.Stats()
	if !st.Spooling || st.Spooled != 1500 || st.Pending != 1500 {
		t.Fatalf("during the outage %+v, want spooling with 1500 events", st)
	}
	// The replay tries the store and fails at least once before it comes back.
	testutil.Eventually(t, "a failed replay while the store is down", 10*time.Second, func() bool { return s.Stats().Failures > 0 })
	// The store comes back while capture goes on: new batches queue behind the spool.
	db.setDown(false)
	write(t, s, events[2000:2500], 50)
	waitCaughtUp(t, s)
	write(t, s, events[2500:], 50)
	db.check(t, events)
	st = s.Stats()
	if st.Replayed != st.Spooled || st.Spooled < 1500 || st.Failures == 0 {
		t.Errorf("after catching up %+v: want replayed = spooled >= 1500, and failures counted", st)
	}
	if files, _ := filepath.Glob(filepath.Join(s.cfg.Dir, "*.jsonl")); len(files) != 1 {
		t.Errorf("segments left after catching up: %v, want only the one taking appends", files)
	}
}

// A write that failed part way: what the store took is not written again, the rest is spooled.
func TestPartialWriteSpoolsOnlyTheRest(t *testing.T) {
	db := newStore()
	s := open(t, db, testConfig(t))
	events := makeEvents(200)
	db.mu.Lock()
	db.down, db.partial = true, 30
	db.mu.Unlock()
	write(t, s, events[:100], 100)
	if st := s.Stats(); st.Spooled != 70 {
		t.Fatalf("spooled %d, want the 70 after the 30 written", st.Spooled)
	}
	// The replay fails part way too.
	db.mu.Lock()
	db.partial = 20
	db.mu.Unlock()
	write(t, s, events[100:], 100)
	testutil.Eventually(t, "the replay's partial write", 5*time.Second, func() bool { return db.count() >= 50 })
	db.setDown(false)
	waitCaughtUp(t, s)
	db.check(t, events)
}

func TestBadEvent(t *testing.T) {
	for _, spooling := range []bool{false, true} {
		t.Run(fmt.Sprintf("spooling=%v", spooling), func(t *testing.T) {
			db := newStore()
			s := open(t, db, testConfig(t))
			events := makeEvents(100)
			db.refuse[events[40].UUID] = true
			want := append(append([]*event.Event(nil), events[:40]...), events[41:]...)
			if !spooling {
				// Passed to the hub as it is: the store works, that event is not for it.
				err := s.Write(context.Background(), events)
				be := (*hub.BadEventError)(nil)
				if !errors.As(err, &be) || be.Index != 40 {
					t.Fatalf("Write = %v, want the store's BadEventError at 40", err)
				}
				write(t, s, events[41:], 100) // what the hub does next
				if st := s.Stats(); st.Spooling || st.Spooled != 0 {
					t.Errorf("a refused event started spooling: %+v", st)
				}
				db.check(t, want)
				return
			}
			db.setDown(true)
			write(t, s, events, 30)
			db.setDown(false)
			waitCaughtUp(t, s)
			db.check(t, want)
			if st := s.Stats(); st.Refused != 1 || st.Replayed != 99 {
				t.Errorf("stats %+v, want 1 refused, 99 replayed", st)
			}
		})
	}
}

// send writes batch as the hub does and returns how many events the sink took.
func send(s *Sink, batch []*event.Event) (int, error) {
	err := s.Write(context.Background(), batch)
	if pe := (*hub.PartialError)(nil); errors.As(err, &pe) {
		return pe.Done, err
	}
	if err != nil {
		return 0, err
	}
	return len(batch), nil
}

// A full spool takes what fits and refuses the rest (the hub keeps it and retries), says so
// once however often, and takes it once the store is back and room is made.
func TestFullSpoolRefusesLogsAndRecovers(t *testing.T) {
	db := newStore()
	var logs testutil.SyncBuffer
	cfg := testConfig(t)
	cfg.MaxBytes = 256 << 10 // about 400 events of 600 bytes
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	s := open(t, db, cfg)
	events := makeEvents(2000)
	db.setDown(true)
	written := 0
	var fullErr error
	for written < len(events) && fullErr == nil {
		var n int
		n, fullErr = send(s, events[written:written+50])
		written += n
	}
	if !errors.Is(fullErr, spool.ErrFull) || !strings.Contains(fullErr.Error(), "--store-spool-max") {
		t.Fatalf("Write to a full spool: %v, want ErrFull naming --store-spool-max", fullErr)
	}
	if st := s.Stats(); st.Bytes > cfg.MaxBytes || st.Bytes < cfg.MaxBytes-1024 {
		t.Errorf("the spool holds %d bytes: want it filled to its cap of %d, not past it", st.Bytes, cfg.MaxBytes)
	}
	for range 3 { // the hub's retries
		if n, err := send(s, events[written:written+50]); n != 0 || !errors.Is(err, spool.ErrFull) {
			t.Fatalf("retry: %d taken, %v", n, err)
		}
	}
	st := s.Stats()
	if st.FullRefusals != 4 || st.Spooled != uint64(written) {
		t.Errorf("stats %+v: want 4 refusals, %d spooled", st, written)
	}
	if n := strings.Count(logs.String(), "store spool full"); n != 1 {
		t.Errorf("%d spool-full warnings, want 1 (rate-limited):\n%s", n, logs.String())
	}
	db.setDown(false)
	// The hub retries the refused rest until the replay has made room, then goes on.
	for written < len(events) {
		n, err := send(s, events[written:min(written+50, len(events))])
		written += n
		if errors.Is(err, spool.ErrFull) {
			time.Sleep(time.Millisecond)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, s)
	db.check(t, events)
}

// The store fails part way through a batch and the spool can take only part of the rest: the
// hub is told how far the batch got, and nothing is written twice.
func TestPartialWriteIntoANearlyFullSpool(t *testing.T) {
	db := newStore()
	cfg := testConfig(t)
	cfg.MaxBytes = 64 << 10 // about 100 events
	s := open(t, db, cfg)
	events := makeEvents(400)
	db.mu.Lock()
	db.down, db.partial = true, 20
	db.mu.Unlock()
	n, err := send(s, events[:300])
	if !errors.Is(err, spool.ErrFull) || !errors.Is(err, errDown) || n <= 20 || n >= 300 {
		t.Fatalf("took %d of 300 (%v): want the 20 the store wrote, some spooled, the store's and the spool's errors", n, err)
	}
	if st := s.Stats(); st.Spooled != uint64(n-20) {
		t.Errorf("spooled %d, want %d", st.Spooled, n-20)
	}
	db.setDown(false)
	for written := n; written < len(events); {
		n, err := send(s, events[written:min(written+100, len(events))])
		written += n
		if errors.Is(err, spool.ErrFull) {
			time.Sleep(time.Millisecond)
		} else if err != nil {
			t.Fatal(err)
		}
	}
	waitCaughtUp(t, s)
	db.check(t, events)
}

// A node restarted with events in the spool writes them first, before anything new.
func TestRestartReplaysTheSpoolFirst(t *testing.T) {
	db := newStore()
	cfg := testConfig(t)
	events := makeEvents(1000)
	s, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	write(t, s, events[:100], 100)
	db.setDown(true)
	write(t, s, events[100:700], 100)
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(context.Background(), events[700:]); err == nil {
		t.Fatal("Write after Close succeeded")
	}

	db.setDown(false)
	s, err = New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if st := s.Stats(); !st.Spooling || st.Pending != 600 {
		t.Fatalf("reopened %+v, want 600 pending and spooling", st)
	}
	write(t, s, events[700:800], 100) // before Start: behind the spool, not before it
	s.Start(context.Background())
	write(t, s, events[800:], 100)
	waitCaughtUp(t, s)
	db.check(t, events)
}

// A crash in the middle of an append leaves a torn record: the next start cuts it, counts and
// logs it, and replays every whole one.
func TestTornTailIsCutCountedAndLogged(t *testing.T) {
	db := newStore()
	cfg := testConfig(t)
	events := makeEvents(300)
	db.setDown(true)
	s, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, events, 100)
	s.Close(context.Background())
	segs, _ := filepath.Glob(filepath.Join(cfg.Dir, "*.jsonl"))
	torn, _ := appendRecord(nil, makeEvents(1)[0])
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(torn[:len(torn)/2])
	f.Close()

	var logs testutil.SyncBuffer
	cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
	db.setDown(false)
	s = open(t, db, cfg)
	waitCaughtUp(t, s)
	if st := s.Stats(); st.Torn != 1 || st.Replayed != 300 || st.Corrupt != 0 {
		t.Errorf("stats %+v, want 1 torn, 300 replayed, none corrupt", st)
	}
	if !strings.Contains(logs.String(), "torn by a crash") {
		t.Errorf("the torn record is not logged:\n%s", logs.String())
	}
	db.check(t, events)
}

// A whole line that is not a record (a disk error, a hand edit) is skipped and counted, not
// retried forever.
func TestCorruptRecordIsSkipped(t *testing.T) {
	db := newStore()
	cfg := testConfig(t)
	events := makeEvents(20)
	db.setDown(true)
	s, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, events[:10], 10)
	s.mu.Lock()
	s.spool.Append([][]byte{[]byte(`{"v":1,"e":{"event_uuid":`), []byte(`{"v":9,"e":{}}`)})
	s.mu.Unlock()
	write(t, s, events[10:], 10)
	db.setDown(false)
	s.Start(context.Background())
	defer s.Close(context.Background())
	waitCaughtUp(t, s)
	if st := s.Stats(); st.Corrupt != 2 || st.Replayed != 20 {
		t.Errorf("stats %+v, want 2 corrupt, 20 replayed", st)
	}
	db.check(t, events)
}

func TestOneProcessPerSpool(t *testing.T) {
	cfg := testConfig(t)
	open(t, newStore(), cfg)
	if _, err := New(newStore(), cfg); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second wrapper on the same spool: %v, want an in-use error", err)
	}
}

// Close from several goroutines at once, with a writer and a failing replay under way: every
// Close returns, Write fails after it, nothing leaks (goleak), and what was spooled is kept.
func TestConcurrentClose(t *testing.T) {
	db := newStore()
	cfg := testConfig(t)
	db.setDown(true)
	s, err := New(db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start(context.Background())
	events := makeEvents(2000)
	var accepted sync.Map
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < len(events); i += 10 {
			if s.Write(context.Background(), events[i:i+10]) != nil {
				return
			}
			for _, e := range events[i : i+10] {
				accepted.Store(e.UUID, true)
			}
		}
	})
	testutil.Eventually(t, "some batches spooled", 5*time.Second, func() bool { return s.Stats().Spooled > 100 })
	for range 4 {
		wg.Go(func() {
			if err := s.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Write(context.Background(), events[:1]); err == nil {
		t.Error("Write after Close succeeded")
	}
	// Every batch Write accepted is in the spool for the next start.
	db.setDown(false)
	s = open(t, db, cfg)
	waitCaughtUp(t, s)
	n := 0
	accepted.Range(func(k, _ any) bool {
		n++
		if db.writes[k.(string)] != 1 {
			t.Errorf("accepted event %s written %d times", k, db.writes[k.(string)])
		}
		return true
	})
	if n == 0 {
		t.Fatal("nothing accepted before Close")
	}
}

// Through a real hub: the store goes down and up while events are published; the hub counts
// every one delivered and none dropped, and the store has each once, in order.
func TestThroughTheHub(t *testing.T) {
	db := newStore()
	s := open(t, db, testConfig(t))
	h := hub.New(nil)
	h.Add(s, hub.Options{Capacity: 256, MaxBatch: 64, Policy: hub.Block})
	h.Start(context.Background())
	events := makeEvents(5000)
	for i, e := range events {
		switch i {
		case 1000:
			db.setDown(true)
		case 4000:
			db.setDown(false)
		}
		h.Publish(e)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, s)
	st := h.Stats()[0]
	if st.Name != "db" || st.Delivered != 5000 || st.Dropped != 0 || st.Failures != 0 {
		t.Errorf("hub stats %+v: want all 5000 delivered to sink db, none dropped, no failure", st)
	}
	if s.Stats().Spooled == 0 {
		t.Error("nothing went through the spool")
	}
	db.check(t, events)
}

// What JSON leaves out of an event from a peer survives the spool.
func TestRecordRoundTrip(t *testing.T) {
	base := makeEvents(1)[0]
	peer := *base
	peer.FromPeer, peer.Peer, peer.Trusted, peer.Sealed = true, "12D3KooWexample", true, []byte{0, 1, '\n', 0xff}
	folded := *base
	folded.RepeatCount, folded.Tool, folded.UASpoofed = 1234, "sipvicious", true
	folded.Payload = []event.Payload{{Kind: "sqli", Where: "request-uri"}}
	folded.SIPMessage = "INVITE sip:x SIP/2.0\r\nVia: \"q\" \\ \u2028 <sip:é>\r\n\r\n"
	untrusted := peer
	untrusted.Trusted, untrusted.Sealed = false, nil
	for name, e := range map[string]*event.Event{"captured": base, "from a trusted peer": &peer,
		"folded with extras": &folded, "from an untrusted peer": &untrusted} {
		t.Run(name, func(t *testing.T) {
			b, err := appendRecord(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			if strings.ContainsRune(string(b), '\n') {
				t.Fatalf("record has a newline: %s", b)
			}
			got, err := parseRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, e)
			}
		})
	}
}

// Peer events keep their provenance through an outage.
func TestPeerEventsKeepProvenance(t *testing.T) {
	db := newStore()
	s := open(t, db, testConfig(t))
	events := makeEvents(10)
	for i, e := range events {
		e.FromPeer, e.Peer, e.Trusted, e.Sealed = true, fmt.Sprintf("peer-%d", i), i%2 == 0, []byte{byte(i)}
	}
	db.setDown(true)
	write(t, s, events, 5)
	db.setDown(false)
	waitCaughtUp(t, s)
	db.check(t, events)
	for i, e := range db.got {
		if !reflect.DeepEqual(e, events[i]) {
			t.Errorf("event %d stored as %+v, want %+v", i, e, events[i])
		}
	}
}
