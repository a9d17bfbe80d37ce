package fold

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"

	"github.com/dialtrap/dialtrap/internal/event"
)

// clock is a fake clock tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sink collects what a Folder passes on.
type sink struct {
	mu     sync.Mutex
	events []*event.Event
}

func (s *sink) publish(e *event.Event) { s.mu.Lock(); s.events = append(s.events, e); s.mu.Unlock() }

func (s *sink) take() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.events
	s.events = nil
	return out
}

func probe(src, number string) *event.Event {
	return &event.Event{AppName: event.AppName, UUID: uuid.NewString(), Timestamp: event.FormatTime(time.Now()),
		SourceIP: src, DestinationIP: "192.0.2.1", Transport: event.UDP, SIPMethod: "INVITE",
		CalledNumber: number, SIPUserAgent: "friendly-scanner", SIPMessage: "INVITE sip:" + number + "@192.0.2.1 SIP/2.0\r\n\r\n"}
}

// newFolder returns a Folder on a fake clock whose goroutine never ends a window by itself
// (its tick is far off); tests call Sweep.
func newFolder(t *testing.T, window time.Duration, limits ...int) (*Folder, *sink, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	s := &sink{}
	cfg := Config{Window: window, Publish: s.publish, Now: c.now}
	if len(limits) == 2 {
		cfg.MaxGroups, cfg.MaxBytes = limits[0], limits[1]
	}
	f := New(cfg)
	t.Cleanup(f.Close)
	return f, s, c
}

// add offers e's probe as capture does: Repeat first, and the event only when not folded.
func add(f *Folder, e *event.Event) {
	p := Probe{Source: netip.MustParseAddr(e.SourceIP), Dest: netip.MustParseAddr(e.DestinationIP), Transport: e.Transport,
		Verified: e.SourceVerified, Method: []byte(e.SIPMethod), Number: []byte(e.CalledNumber), Agent: []byte(e.SIPUserAgent)}
	if !f.Repeat(&p) {
		f.Open(&p, e)
	}
}

func weights(events []*event.Event) (n int64) {
	for _, e := range events {
		n += e.Weight()
	}
	return n
}

func TestFold(t *testing.T) {
	for _, c := range []struct {
		name    string
		window  time.Duration
		probes  []*event.Event // all sent at once
		atOnce  int            // passed on before the window ends
		later   []int64        // repeat counts of what the window's end passes on
		folded  uint64
		emitted uint64
	}{
		{"one probe", time.Second, []*event.Event{probe("198.51.100.1", "100")}, 1, nil, 0, 0},
		{"a flood of one probe", time.Second, repeat(probe("198.51.100.1", "100"), 1000), 1, []int64{999}, 999, 1},
		{"one repeat is a plain event", time.Second, repeat(probe("198.51.100.1", "100"), 2), 1, []int64{0}, 1, 1},
		{"other numbers are other groups", time.Second, []*event.Event{probe("198.51.100.1", "100"), probe("198.51.100.1", "101"),
			probe("198.51.100.1", "100")}, 2, []int64{0}, 1, 1},
		{"other sources are other groups", time.Second, []*event.Event{probe("198.51.100.1", "100"), probe("198.51.100.2", "100")}, 2, nil, 0, 0},
		{"window 0 folds nothing", 0, repeat(probe("198.51.100.1", "100"), 5), 5, nil, 0, 0},
		{"a proven source is another group", time.Second, []*event.Event{probe("198.51.100.1", "100"), verified(probe("198.51.100.1", "100"))}, 2, nil, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, s, clk := newFolder(t, c.window)
			for _, e := range c.probes {
				add(f, e)
			}
			if got := s.take(); len(got) != c.atOnce {
				t.Fatalf("%d events passed at once, want %d", len(got), c.atOnce)
			}
			clk.add(c.window / 2)
			f.Sweep()
			if got := s.take(); len(got) != 0 {
				t.Fatalf("%d events passed before the window ended", len(got))
			}
			clk.add(c.window)
			f.Sweep()
			got := s.take()
			var counts []int64
			for _, e := range got {
				counts = append(counts, e.RepeatCount)
			}
			if fmt.Sprint(counts) != fmt.Sprint(c.later) && !(len(counts) == 0 && len(c.later) == 0) {
				t.Errorf("window's end passed repeat counts %v, want %v", counts, c.later)
			}
			// A window with repeats leaves its group open for one more (the flood may go
			// on); a window with none closes it.
			clk.add(c.window)
			f.Sweep()
			if got := s.take(); len(got) != 0 {
				t.Errorf("a window with nothing alike passed %d events", len(got))
			}
			st := f.Stats()
			if st.Folded != c.folded || st.Emitted != c.emitted || st.Groups != 0 || st.Bytes != 0 {
				t.Errorf("stats %+v, want %d folded, %d emitted, nothing held", st, c.folded, c.emitted)
			}
		})
	}
}

func repeat(e *event.Event, n int) []*event.Event {
	out := make([]*event.Event, n)
	for i := range out {
		c := *e
		c.UUID = uuid.NewString()
		out[i] = &c
	}
	return out
}

func verified(e *event.Event) *event.Event {
	e.SourceVerified = true
	return e
}

// A flood that goes on past its window costs one event a window: the probe after the window
// passes the window's event and counts in the next, even if no sweep came by. Once a window
// passes with nothing alike, the next probe starts anew and is passed at once.
func TestFloodGoingOnIsOneEventAWindow(t *testing.T) {
	f, s, clk := newFolder(t, time.Second)
	for range 3 {
		add(f, probe("198.51.100.1", "100"))
	}
	clk.add(1500 * time.Millisecond)
	add(f, probe("198.51.100.1", "100")) // no sweep came by
	add(f, probe("198.51.100.1", "100"))
	got := s.take()
	if len(got) != 2 || got[1].RepeatCount != 2 || got[1].UUID == got[0].UUID {
		t.Fatalf("passed %d events (%v), want the first and a new event for the two folded", len(got), got)
	}
	clk.add(1500 * time.Millisecond)
	f.Sweep()
	if got := s.take(); len(got) != 1 || got[0].RepeatCount != 2 {
		t.Fatalf("the second window passed %d events (%v), want one for its 2 probes", len(got), got)
	}
	clk.add(1500 * time.Millisecond)
	f.Sweep() // a window with nothing: the group closes
	last := probe("198.51.100.1", "100")
	add(f, last)
	if got := s.take(); len(got) != 1 || got[0] != last {
		t.Errorf("after a quiet window passed %v, want the new probe at once", got)
	}
	if st := f.Stats(); st.Probes != 6 || st.Folded != 4 || st.Emitted != 2 {
		t.Errorf("stats %+v, want 6 probes, 4 folded, 2 window events", st)
	}
}

// Under back-pressure a new group's first probe is held too, for a longer window; groups
// opened before keep theirs. Nothing is lost.
func TestBusyHoldsFirstProbes(t *testing.T) {
	var busy atomic.Bool
	c := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	s := &sink{}
	f := New(Config{Window: time.Second, Publish: s.publish, Now: c.now, Busy: busy.Load})
	t.Cleanup(f.Close)
	add(f, probe("198.51.100.1", "100")) // opened while calm: passed at once
	busy.Store(true)
	for i := range 100 {
		for range 3 {
			add(f, probe(fmt.Sprintf("198.51.100.%d", 2+i), "100"))
		}
	}
	if got := s.take(); len(got) != 1 {
		t.Fatalf("%d events passed at once under pressure, want only the calm group's first", len(got))
	}
	busy.Store(false)
	c.add(2 * time.Second)
	f.Sweep()
	if got := s.take(); len(got) != 0 {
		t.Fatalf("%d events passed after one window: held groups have %d", len(got), PressureFactor)
	}
	c.add(PressureFactor * time.Second)
	f.Sweep()
	got := s.take()
	if len(got) != 100 || weights(got) != 300 {
		t.Errorf("after the long window: %d events standing for %d probes, want 100 for 300", len(got), weights(got))
	}
	if st := f.Stats(); st.Held != 100 || st.Groups != 0 || st.Bytes != 0 {
		t.Errorf("stats %+v: want 100 held, nothing left", st)
	}
}

// Close passes on what is held: nothing counted is lost at shutdown.
func TestCloseFlushes(t *testing.T) {
	f, s, _ := newFolder(t, time.Minute)
	for range 10 {
		add(f, probe("198.51.100.1", "100"))
	}
	f.Close()
	if got := s.take(); weights(got) != 10 || len(got) != 2 {
		t.Errorf("after Close: %d events standing for %d probes, want 2 for 10", len(got), weights(got))
	}
}

// At the limits new groups pass unfolded; nothing is lost and memory stays bounded.
func TestLimits(t *testing.T) {
	for _, c := range []struct {
		name             string
		maxGroups, bytes int
	}{
		{"groups", shards, 1 << 30}, // one group a shard
		{"bytes", 1 << 20, shards},  // any probe fills a shard
	} {
		t.Run(c.name, func(t *testing.T) {
			f, s, clk := newFolder(t, time.Second, c.maxGroups, c.bytes)
			var sent int64
			for i := range 200 {
				for range 3 {
					add(f, probe(fmt.Sprintf("198.51.100.%d", i), "100"))
					sent++
				}
			}
			st := f.Stats()
			if st.Unfolded == 0 || st.Groups > shards {
				t.Errorf("stats %+v: want probes passed unfolded and at most %d groups", st, shards)
			}
			clk.add(2 * time.Second)
			f.Sweep()
			if got := weights(s.take()); got != sent {
				t.Errorf("passed events stand for %d probes, want %d", got, sent)
			}
		})
	}
}

// However probes interleave across goroutines and sweeps, what is passed on stands for every
// probe offered, once.
func TestConcurrentProbesAllCounted(t *testing.T) {
	var total atomic.Int64
	var mu sync.Mutex
	seen := map[*event.Event]bool{}
	f := New(Config{Window: 2 * time.Millisecond, Publish: func(e *event.Event) {
		mu.Lock()
		if seen[e] {
			t.Errorf("event passed twice")
		}
		seen[e] = true
		mu.Unlock()
		total.Add(e.Weight())
	}})
	var wg sync.WaitGroup
	const workers, each = 4, 20000
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				add(f, probe(fmt.Sprintf("198.51.100.%d", (w*7+i)%13), fmt.Sprint(i%5)))
			}
		})
	}
	wg.Wait()
	f.Close()
	if got := total.Load(); got != workers*each {
		t.Errorf("passed events stand for %d probes, want %d", got, workers*each)
	}
	if st := f.Stats(); st.Folded == 0 || st.Groups != 0 {
		t.Errorf("stats %+v: want folding and nothing held after Close", st)
	}
}

// The cost of a probe alike an open group's first (Repeat: a hash and a counter) and of one
// that opens a group (Repeat, then Open passing its event on), against handing the event
// straight on.
func BenchmarkRepeat(b *testing.B) {
	e := probe("198.51.100.1", "0046812118532")
	newProbe := func() Probe {
		return Probe{Source: netip.MustParseAddr(e.SourceIP), Dest: netip.MustParseAddr(e.DestinationIP), Transport: e.Transport,
			Method: []byte(e.SIPMethod), Number: []byte(e.CalledNumber), Agent: []byte(e.SIPUserAgent)}
	}
	b.Run("direct", func(b *testing.B) {
		var n int
		publish := func(*event.Event) { n++ }
		for b.Loop() {
			publish(e)
		}
	})
	b.Run("folded", func(b *testing.B) {
		f := New(Config{Window: time.Hour, Publish: func(*event.Event) {}})
		defer f.Close()
		add(f, e)
		b.ReportAllocs()
		q := newProbe() // capture's probe points into its read buffer: nothing to allocate
		for b.Loop() {
			p := q
			if !f.Repeat(&p) {
				b.Fatal("not folded")
			}
		}
	})
	b.Run("new-group", func(b *testing.B) {
		f := New(Config{Window: time.Nanosecond, Publish: func(*event.Event) {}})
		defer f.Close()
		for b.Loop() {
			p := newProbe()
			if !f.Repeat(&p) {
				f.Open(&p, e)
			}
		}
	})
}

// An event stands for at most maxRepeatCount probes (what a peer accepts): a group that
// reaches it ends, and the probes after it start the next, so no probe goes uncounted
// however long the window and fast the flood.
func TestFullGroupLosesNoCount(t *testing.T) {
	defer func(n int64) { maxRepeatCount = n }(maxRepeatCount)
	maxRepeatCount = 10
	for _, c := range []struct {
		name   string
		busy   bool
		probes int
	}{
		{"just full", false, 11},
		{"passed at once", false, 95},
		{"held under pressure", true, 95},
	} {
		t.Run(c.name, func(t *testing.T) {
			clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
			s := &sink{}
			f := New(Config{Window: time.Minute, Publish: s.publish, Now: clk.now, Busy: func() bool { return c.busy }})
			for range c.probes {
				add(f, probe("198.51.100.1", "100"))
			}
			f.Close()
			got := s.take()
			if w := weights(got); w != int64(c.probes) {
				t.Errorf("%d events stand for %d probes, want %d", len(got), w, c.probes)
			}
			for _, e := range got {
				if e.RepeatCount > maxRepeatCount {
					t.Errorf("an event stands for %d probes, over the bound %d", e.RepeatCount, maxRepeatCount)
				}
			}
		})
	}
}

// Capture that outlives Close (the node gives up waiting on the SIP listeners after a
// timeout and closes the Folder anyway) has each probe passed on as it is: no window is left
// open with nobody to end it.
func TestProbesAfterCloseAreNotLost(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(fmt.Sprint("busy=", busy), func(t *testing.T) {
			s := &sink{}
			f := New(Config{Window: time.Minute, Publish: s.publish, Busy: func() bool { return busy }})
			add(f, probe("198.51.100.1", "100"))
			add(f, probe("198.51.100.1", "100"))
			f.Close()
			if w := weights(s.take()); w != 2 {
				t.Fatalf("Close passed on events standing for %d probes, want 2", w)
			}
			for range 3 {
				add(f, probe("198.51.100.1", "100"))
			}
			if got := s.take(); len(got) != 3 || weights(got) != 3 {
				t.Errorf("after Close: %d events standing for %d probes passed on, want each of the 3 as it is", len(got), weights(got))
			}
			if st := f.Stats(); st.Groups != 0 || st.Bytes != 0 {
				t.Errorf("stats %+v: groups opened after Close", st)
			}
		})
	}
}

// Messages that are not SIP carry no method, number or agent: their first bytes tell them
// apart, so junk of other content is another group and junk alike folds.
func TestContentTellsJunkApart(t *testing.T) {
	f, s, _ := newFolder(t, time.Second)
	src, dst := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")
	for _, content := range []string{"", "\x16\x03\x01 hello", "\x16\x03\x01 hello", "GET / HTTP/1.1", ""} {
		p := Probe{Source: src, Dest: dst, Transport: event.UDP, Content: []byte(content)}
		if !f.Repeat(&p) {
			e := probe("198.51.100.1", "")
			e.SIPMessage = content
			f.Open(&p, e)
		}
	}
	if got := s.take(); len(got) != 3 {
		t.Errorf("%d events passed at once for 3 kinds of junk, want 3", len(got))
	}
	if st := f.Stats(); st.Folded != 2 {
		t.Errorf("%d folded, want the repeated hello and the second empty datagram", st.Folded)
	}
}

// With no group open the sweeper sleeps without a timer (an idle node does not wake for it),
// and the next group wakes it: its folded event still leaves when its window ends.
func TestSweeperSleepsWhenNothingIsOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &sink{}
		f := New(Config{Window: time.Second, Publish: s.publish})
		defer f.Close()
		for round := range 3 {
			time.Sleep(2 * time.Second) // a rolled group's next window ends empty
			synctest.Wait()
			if !f.idle.Load() {
				t.Fatalf("round %d: the sweeper is not asleep with nothing open", round)
			}
			time.Sleep(time.Hour) // asleep: no tick, no event
			synctest.Wait()
			if got := s.take(); len(got) != 0 {
				t.Fatalf("round %d: %d events while idle", round, len(got))
			}
			e := probe("198.51.100.7", fmt.Sprint(round))
			add(f, e)
			add(f, probe("198.51.100.7", fmt.Sprint(round))) // a repeat: folded
			if f.idle.Load() {
				t.Fatalf("round %d: still asleep with a group open", round)
			}
			time.Sleep(time.Second + f.tick())
			synctest.Wait()
			if got := s.take(); weights(got) != 2 || len(got) != 2 {
				t.Fatalf("round %d: passed %d events standing for %d probes, want the first and one folded", round, len(got), weights(got))
			}
		}
	})
}

// Groups that owe no event (a probe with no repeat) are freed once a window, without the
// short tick: at a few probes a second each opens a group, and a tick a tenth of a window
// was a wake-up a probe. A repeat brings the short tick back for its event.
func TestSweeperTicksShortOnlyWhenOwed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &sink{}
		f := New(Config{Window: time.Second, Publish: s.publish})
		defer f.Close()
		for i := range 100 { // 10 a second, each its own group
			add(f, probe("198.51.100.7", fmt.Sprint(i)))
			time.Sleep(100 * time.Millisecond)
		}
		if n := f.sweeps.Load(); n > 12 {
			t.Errorf("%d sweeps in 10 s with nothing owed, want about one a second", n)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if st := f.Stats(); st.Groups != 0 {
			t.Errorf("%d groups left two windows after the last probe", st.Groups)
		}
		before := f.sweeps.Load()
		add(f, probe("198.51.100.8", "1"))
		add(f, probe("198.51.100.8", "1"))
		time.Sleep(time.Second + f.tick())
		synctest.Wait()
		if got := s.take(); weights(got) != 102 {
			t.Errorf("passed events stand for %d probes, want 102", weights(got))
		}
		if n := f.sweeps.Load() - before; n < 5 {
			t.Errorf("%d sweeps over the window of a group with a repeat, want the short tick", n)
		}
	})
}
