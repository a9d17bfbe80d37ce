package hub

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is a sink that keeps what it gets; gate, if set, holds every Write until closed,
// and failFirst fails that many Writes.
type recorder struct {
	name      string
	gate      chan struct{}
	failFirst int

	mu     sync.Mutex
	got    []string
	writes int
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Write(ctx context.Context, batch []*event.Event) error {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes++
	if r.writes <= r.failFirst {
		return errors.New("disk full")
	}
	for _, e := range batch {
		r.got = append(r.got, e.UUID)
	}
	return nil
}

func (r *recorder) uuids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func events(n int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		out[i] = &event.Event{UUID: fmt.Sprint(i)}
	}
	return out
}

func TestFanOutInOrderAndFlushOnClose(t *testing.T) {
	h := New(nil)
	a, b := &recorder{name: "a"}, &recorder{name: "b"}
	h.Add(a, Options{Capacity: 10000, MaxBatch: 7})
	h.Add(b, Options{Capacity: 10000, Policy: Block})
	h.Start(context.Background())
	evs := events(5000)
	for _, e := range evs {
		h.Publish(e)
	}
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*recorder{a, b} {
		got := r.uuids()
		if len(got) != len(evs) {
			t.Fatalf("sink %s got %d events, want %d", r.name, len(got), len(evs))
		}
		for i := range got {
			if got[i] != evs[i].UUID {
				t.Fatalf("sink %s event %d is %s: order lost", r.name, i, got[i])
			}
		}
	}
	h.Publish(evs[0]) // after Close: ignored, must not panic or block
}

func TestSlowSinkDropsOldestWithoutSlowingOthers(t *testing.T) {
	h := New(nil)
	slow := &recorder{name: "slow", gate: make(chan struct{})}
	fast := &recorder{name: "fast"}
	h.Add(slow, Options{Capacity: 10, MaxBatch: 1})
	h.Add(fast, Options{Capacity: 100000})
	h.Start(context.Background())
	for _, e := range events(1000) {
		h.Publish(e) // would hang here if the stuck sink could block publishers
	}
	var st Stats
	for _, s := range h.Stats() {
		if s.Name == "slow" {
			st = s
		}
	}
	// One event may sit in the worker's blocked Write; ten are queued; the rest were dropped.
	if st.Dropped < 989 || st.Queued != 10 {
		t.Errorf("slow sink stats %+v: want about 989 dropped and 10 queued", st)
	}
	close(slow.gate)
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(fast.uuids()); n != 1000 {
		t.Errorf("fast sink got %d of 1000", n)
	}
	got := slow.uuids()
	if len(got) == 0 || got[len(got)-1] != "999" {
		t.Errorf("slow sink kept %v: want the newest events", got)
	}
}

// A Block sink makes a publisher wait while its queue is full and it is healthy, and so loses
// nothing; the same load on a DropOldest sink loses events. The test fails if Block never
// blocks (the publisher would finish while the sink is held) or if it drops.
func TestBlockSinkWaitsAndLosesNothing(t *testing.T) {
	for _, policy := range []Policy{Block, DropOldest} {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			r := &recorder{name: "store", gate: make(chan struct{})}
			h.Add(r, Options{Capacity: 4, MaxBatch: 2, Policy: policy})
			h.Start(context.Background())
			done := make(chan struct{})
			go func() {
				for _, e := range events(100) {
					h.Publish(e)
				}
				close(done)
			}()
			synctest.Wait() // the worker holds a batch in Write; the publisher filled the queue
			select {
			case <-done:
				if policy == Block {
					t.Error("Block: the publisher finished while the sink was held and its queue full")
				}
			default:
				if policy == DropOldest {
					t.Error("DropOldest: the publisher waited")
				}
			}
			close(r.gate)
			<-done
			if err := h.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := h.Stats()[0]
			switch policy {
			case Block:
				if n := len(r.uuids()); n != 100 || st.Dropped != 0 {
					t.Errorf("Block: got %d of 100, dropped %d", n, st.Dropped)
				}
			case DropOldest:
				if st.Dropped == 0 || st.Delivered+st.Dropped != 100 {
					t.Errorf("DropOldest: delivered %d, dropped %d: want drops, adding up to 100", st.Delivered, st.Dropped)
				}
			}
		})
	}
}

// Busy tells a Block sink's queue over half full; a DropOldest sink's never counts.
func TestBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		store := &recorder{name: "store", gate: make(chan struct{})}
		other := &recorder{name: "other", gate: make(chan struct{})}
		h.Add(store, Options{Capacity: 8, MaxBatch: 1, Policy: Block})
		h.Add(other, Options{Capacity: 2, MaxBatch: 1})
		h.Start(context.Background())
		evs := events(6)
		var busy []bool
		for _, e := range evs {
			h.Publish(e)
			synctest.Wait()
			busy = append(busy, h.Busy())
		}
		// The worker holds the first event in Write: 5 of 8 queued after the sixth.
		if want := []bool{false, false, false, false, false, true}; !reflect.DeepEqual(busy, want) {
			t.Errorf("Busy after each publish %v, want %v", busy, want)
		}
		close(store.gate)
		close(other.gate)
		synctest.Wait()
		if h.Busy() {
			t.Error("Busy once the queue drained")
		}
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// A sink that wrote part of a batch before failing says so with PartialError: the retry sends
// only the rest, so nothing is delivered twice and nothing is skipped.
func TestPartialErrorRetriesOnlyTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		p := &partial{failAfter: []int{3, 0, 2}}
		h.Add(p, Options{MaxBatch: 10})
		h.Start(context.Background())
		for _, e := range events(10) {
			h.Publish(e)
		}
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		want := make([]string, 10)
		for i := range want {
			want[i] = fmt.Sprint(i)
		}
		if got := p.got; !slices.Equal(got, want) {
			t.Errorf("sink wrote %v, want each event once in order %v", got, want)
		}
		if st := h.Stats()[0]; st.Delivered != 10 || st.Failures != 3 {
			t.Errorf("stats %+v: want 10 delivered, 3 failures", st)
		}
	})
}

// partial writes failAfter[i] events of its i-th Write and then fails; later Writes succeed.
type partial struct {
	failAfter []int
	calls     int
	got       []string
}

func (p *partial) Name() string { return "partial" }

func (p *partial) Write(_ context.Context, batch []*event.Event) error {
	p.calls++
	n := len(batch)
	fail := p.calls <= len(p.failAfter)
	if fail {
		n = min(p.failAfter[p.calls-1], len(batch))
	}
	for _, e := range batch[:n] {
		p.got = append(p.got, e.UUID)
	}
	if fail {
		return &PartialError{Done: n, Err: errors.New("connection reset")}
	}
	return nil
}

// Peer events reach only the sinks added with PeerEvents; local events reach every sink.
func TestPeerEventsReachOnlySinksThatTakeThem(t *testing.T) {
	h := New(nil)
	store, log := &recorder{name: "store"}, &recorder{name: "syslog"}
	h.Add(store, Options{PeerEvents: true})
	h.Add(log, Options{})
	h.Start(context.Background())
	local, remote := &event.Event{UUID: "local"}, &event.Event{UUID: "remote", FromPeer: true}
	h.Publish(local)
	h.Publish(remote)
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := store.uuids(); !slices.Equal(got, []string{"local", "remote"}) {
		t.Errorf("store got %v, want both", got)
	}
	if got := log.uuids(); !slices.Equal(got, []string{"local"}) {
		t.Errorf("syslog got %v, want only the local event", got)
	}
}

func TestAddAfterStartPanics(t *testing.T) {
	h := New(nil)
	h.Start(context.Background())
	defer h.Close(context.Background())
	defer func() {
		if recover() == nil {
			t.Error("Add after Start did not panic")
		}
	}()
	h.Add(&recorder{name: "late"}, Options{})
}

// Close without Start still writes what was published.
func TestCloseWithoutStartFlushes(t *testing.T) {
	h := New(nil)
	r := &recorder{name: "r"}
	h.Add(r, Options{})
	h.Publish(&event.Event{UUID: "early"})
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := r.uuids(); !slices.Equal(got, []string{"early"}) {
		t.Errorf("got %v", got)
	}
}

func TestFailingSinkRetriesTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		r := &recorder{name: "flaky", failFirst: 3}
		h.Add(r, Options{Policy: Block})
		h.Start(context.Background())
		for _, e := range events(10) {
			h.Publish(e)
		}
		time.Sleep(time.Minute) // fake time: the back-offs pass
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := len(r.uuids()); n != 10 {
			t.Errorf("got %d of 10 after retries", n)
		}
		if st := h.Stats()[0]; st.Failures != 3 || st.Delivered != 10 {
			t.Errorf("stats %+v: want 3 failures and 10 delivered", st)
		}
	})
}

func TestCloseGivesUpOnDeadSink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		r := &recorder{name: "dead", failFirst: 1 << 30}
		h.Add(r, Options{Policy: Block, Capacity: 8})
		h.Start(context.Background())
		for _, e := range events(20) {
			h.Publish(e) // the sink fails at once, so publishers stop waiting on it
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := h.Close(ctx)
		if err == nil {
			t.Fatal("Close reported no loss for a sink that never wrote")
		}
		st := h.Stats()[0]
		if st.Delivered != 0 || st.Dropped != 20 || st.Queued != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// A publisher already waiting for room when the sink's write fails stops waiting: it drops the
// oldest instead of stalling for the whole outage (capture must go on while the disk is full).
func TestWaitingPublisherIsReleasedWhenTheSinkFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		r := &recorder{name: "failing", gate: make(chan struct{}), failFirst: 1 << 30}
		h.Add(r, Options{Policy: Block, Capacity: 8})
		h.Start(context.Background())
		published := make(chan struct{})
		go func() {
			for _, e := range events(17) { // 8 taken by the blocked write, 8 queued, 1 waits
				h.Publish(e)
			}
			close(published)
		}()
		synctest.Wait() // the write holds the first batch; the publisher waits for room
		select {
		case <-published:
			t.Fatal("the publisher did not wait while the sink was healthy")
		default:
		}
		close(r.gate) // the write fails
		synctest.Wait()
		select {
		case <-published:
		default:
			t.Fatal("the publisher still waits on a failing sink")
		}
		if st := h.Stats()[0]; st.Dropped != 1 {
			t.Errorf("stats %+v, want the oldest queued event dropped", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		h.Close(ctx)
	})
}

// A sink that can never write one event (too large for its transport) says so with
// BadEventError: that event is counted as refused and skipped at once, the queue goes on,
// nothing is retried and the sink stays healthy. It used to be retried forever, and nothing
// after it reached the sink again.
func TestBadEventIsSkippedNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		r := &refuser{bad: map[string]bool{"3": true, "7": true}}
		h.Add(r, Options{MaxBatch: 10, Policy: Block})
		h.Start(context.Background())
		for _, e := range events(10) {
			h.Publish(e)
		}
		if err := h.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if want := []string{"0", "1", "2", "4", "5", "6", "8", "9"}; !slices.Equal(r.got, want) {
			t.Errorf("sink wrote %v, want %v", r.got, want)
		}
		if st := h.Stats()[0]; st.Delivered != 8 || st.Refused != 2 || st.Failures != 0 {
			t.Errorf("stats %+v: want 8 delivered, 2 refused, no failure", st)
		}
	})
}

// refuser writes events in order and refuses those in bad.
type refuser struct {
	bad map[string]bool
	got []string
}

func (r *refuser) Name() string { return "refuser" }

func (r *refuser) Write(_ context.Context, batch []*event.Event) error {
	for i, e := range batch {
		if r.bad[e.UUID] {
			return &BadEventError{Index: i, Err: errors.New("message too long")}
		}
		r.got = append(r.got, e.UUID)
	}
	return nil
}

// Queues are bounded in bytes as well as in events: 64 KiB junk fills a queue's byte budget
// long before its count, and then the oldest go (or, on a Block sink, publishers wait).
func TestQueuesAreBoundedInBytes(t *testing.T) {
	junk := func(i int) *event.Event {
		return &event.Event{UUID: fmt.Sprint(i), SIPMessage: strings.Repeat("x", 64<<10)}
	}
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		held := &recorder{name: "held", gate: make(chan struct{})}
		h.Add(held, Options{Capacity: 10000, MaxBytes: 1 << 20, MaxBatch: 1})
		h.Start(context.Background())
		for i := range 200 {
			h.Publish(junk(i))
		}
		synctest.Wait()
		st := h.Stats()[0]
		if st.QueuedBytes > 1<<20 || st.Queued > 16 || st.Dropped < 180 {
			t.Errorf("after 200 x 64 KiB into a 1 MiB queue: %+v", st)
		}
		close(held.gate)
		h.Close(context.Background())
		if got := held.uuids(); got[len(got)-1] != "199" {
			t.Errorf("kept %v: want the newest", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		store := &recorder{name: "store", gate: make(chan struct{})}
		h.Add(store, Options{Capacity: 10000, MaxBytes: 1 << 20, MaxBatch: 1, Policy: Block})
		h.Start(context.Background())
		done := make(chan struct{})
		go func() {
			for i := range 200 {
				h.Publish(junk(i))
			}
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Error("Block: the publisher went past the byte budget")
		default:
		}
		if st := h.Stats()[0]; st.QueuedBytes > 1<<20 || st.Dropped != 0 {
			t.Errorf("Block queue %+v", st)
		}
		close(store.gate)
		<-done
		h.Close(context.Background())
		if n := len(store.uuids()); n != 200 {
			t.Errorf("Block sink got %d of 200", n)
		}
	})
}

// A batch is bounded in bytes when MaxBatchBytes is set: the store's transactions stay small
// when its queue is full of 64 KiB junk; one event larger than the bound still goes alone.
func TestBatchesAreBoundedInBytes(t *testing.T) {
	h := New(nil)
	var sizes []int
	s := &sizer{sizes: &sizes}
	h.Add(s, Options{MaxBatch: 1000, MaxBatchBytes: 100 << 10})
	for i := range 20 {
		h.Publish(&event.Event{UUID: fmt.Sprint(i), SIPMessage: strings.Repeat("x", 30<<10)})
	}
	h.Publish(&event.Event{UUID: "huge", SIPMessage: strings.Repeat("x", 200<<10)})
	h.Start(context.Background())
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total != 21 || slices.Max(sizes) > 3 {
		t.Errorf("batches %v: want 21 events in batches of at most 3 (100 KiB of 30 KiB events)", sizes)
	}
}

type sizer struct{ sizes *[]int }

func (s *sizer) Name() string { return "sizer" }
func (s *sizer) Write(_ context.Context, b []*event.Event) error {
	*s.sizes = append(*s.sizes, len(b))
	return nil
}

// batches records the size of every Write.
type batches struct {
	mu    sync.Mutex
	sizes []int
	at    []time.Time
}

func (b *batches) Name() string { return "batches" }

func (b *batches) Write(_ context.Context, batch []*event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sizes = append(b.sizes, len(batch))
	b.at = append(b.at, time.Now())
	return nil
}

func sum(sizes []int) (n int) {
	for _, s := range sizes {
		n += s
	}
	return n
}

func (b *batches) get() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.sizes...)
}

func TestLinger(t *testing.T) {
	const linger = 50 * time.Millisecond
	t.Run("events of one window share a write, written one linger after the first", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			defer h.Close(context.Background())
			b := &batches{}
			h.Add(b, Options{MaxBatch: 100, Linger: linger})
			h.Start(context.Background())
			evs := events(21)
			h.Publish(evs[0]) // after a silence: written at once
			synctest.Wait()
			start := time.Now()
			for i, e := range evs[1:] {
				time.Sleep(2 * time.Millisecond) // then 20 events over 40 ms
				if i == 0 {
					start = time.Now()
				}
				h.Publish(e)
			}
			synctest.Wait()
			if got := b.get(); !slices.Equal(got, []int{1}) {
				t.Fatalf("writes %v before the linger ended, want only the first event's", got)
			}
			time.Sleep(linger)
			synctest.Wait()
			if got := b.get(); !slices.Equal(got, []int{1, 20}) {
				t.Fatalf("writes %v, want the first alone and the next 20 together", got)
			}
			if waited := b.at[1].Sub(start); waited != linger {
				t.Errorf("the second event was written after %v, want the linger %v", waited, linger)
			}
		})
	})
	t.Run("events further apart than the linger are written at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			defer h.Close(context.Background())
			b := &batches{}
			h.Add(b, Options{MaxBatch: 100, Linger: linger})
			h.Start(context.Background())
			for i, e := range events(5) {
				h.Publish(e)
				published := time.Now()
				synctest.Wait()
				if got := b.get(); len(got) != i+1 || b.at[i] != published {
					t.Fatalf("event %d: writes %v, want it written at once", i, got)
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	})
	t.Run("a full batch is written at once; the rest lingers", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			defer h.Close(context.Background())
			b := &batches{}
			h.Add(b, Options{MaxBatch: 10, Linger: time.Hour})
			h.Start(context.Background())
			h.Publish(&event.Event{UUID: "first"}) // written at once: nothing came for an hour
			synctest.Wait()
			for _, e := range events(25) {
				h.Publish(e)
			}
			synctest.Wait()
			// The 5 left may go at once too, with a wake-up that was meant for a full batch
			// already taken: never later than the linger.
			if got := b.get(); len(got) < 3 || !slices.Equal(got[:3], []int{1, 10, 10}) || sum(got) < 21 {
				t.Fatalf("writes %v, want the first, then two full batches of 10 at once", got)
			}
			time.Sleep(time.Hour)
			synctest.Wait()
			if got := b.get(); sum(got) != 26 || slices.Max(got) > 10 {
				t.Fatalf("writes %v, want the 5 left behind by one linger later", got)
			}
		})
	})
	t.Run("close writes lingering events at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			b := &batches{}
			h.Add(b, Options{MaxBatch: 100, Linger: time.Hour})
			h.Start(context.Background())
			for _, e := range events(4) {
				h.Publish(e)
			}
			start := time.Now()
			if err := h.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := b.get(); sum(got) != 4 || time.Since(start) != 0 {
				t.Fatalf("writes %v after %v, want all 4 at once", got, time.Since(start))
			}
		})
	})
	t.Run("without linger every wake-up writes", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := New(nil)
			defer h.Close(context.Background())
			b := &batches{}
			h.Add(b, Options{MaxBatch: 100})
			h.Start(context.Background())
			for _, e := range events(3) {
				h.Publish(e)
				synctest.Wait()
			}
			if got := b.get(); !slices.Equal(got, []int{1, 1, 1}) {
				t.Fatalf("writes %v, want three of 1", got)
			}
		})
	})
}

// A queue half full of large events is written at once, whatever the linger: lingering on
// would drop the oldest before a batch filled.
func TestLingerEndsWhenHalfFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		defer h.Close(context.Background())
		b := &batches{}
		h.Add(b, Options{MaxBatch: 1000, MaxBytes: 20 << 10, Linger: time.Hour})
		h.Start(context.Background())
		h.Publish(&event.Event{UUID: "first"})
		synctest.Wait()
		for i := range 5 {
			h.Publish(&event.Event{UUID: fmt.Sprint(i), SIPMessage: strings.Repeat("x", 2000)})
		}
		synctest.Wait()
		if got := b.get(); sum(got) != 6 {
			t.Fatalf("writes %v: the half-full queue waited for the linger", got)
		}
		if st := h.Stats(); st[0].Dropped != 0 {
			t.Errorf("%d events dropped", st[0].Dropped)
		}
	})
}
