package hub

import (
	"context"
	"errors"
	"fmt"
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

func TestBlockSinkLosesNothing(t *testing.T) {
	h := New(nil)
	gate := make(chan struct{})
	r := &recorder{name: "store", gate: gate}
	h.Add(r, Options{Capacity: 4, MaxBatch: 2, Policy: Block})
	done := make(chan struct{})
	go func() {
		for _, e := range events(100) {
			h.Publish(e)
		}
		close(done)
	}()
	close(gate)
	<-done
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(r.uuids()); n != 100 {
		t.Errorf("blocking sink got %d of 100", n)
	}
	if st := h.Stats()[0]; st.Dropped != 0 {
		t.Errorf("blocking sink dropped %d", st.Dropped)
	}
}

func TestFailingSinkRetriesTheBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := New(nil)
		r := &recorder{name: "flaky", failFirst: 3}
		h.Add(r, Options{Policy: Block})
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
