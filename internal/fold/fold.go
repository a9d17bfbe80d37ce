// Package fold turns a flood of identical probes into a few events. A scanner repeating one
// probe at line rate would otherwise cost a row, a JSON log line and a webhook record a probe:
// storage would grow with the attacker's rate, not with what the attacker says.
//
// Probes are identical when they share source address, destination address, transport, SIP
// method, called number and User-Agent. The first of each is passed on at once, so nothing is
// delayed; identical ones within the window after it are held as one event, the latest, whose
// RepeatCount says how many probes it stands for, and passed on when the window ends. Every
// count downstream adds that weight (event.Weight), so aggregates still count every probe.
package fold

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// DefaultWindow is how long identical probes are folded after the first: a scanner's
// retransmissions and a flood's repeats within a second become one event.
const DefaultWindow = time.Second

// MaxWindow bounds the window: folded events are held that long, and a peer's repeat count
// is bounded (event.MaxRepeatCount) on the same assumption.
const MaxWindow = time.Minute

// Limits of the probes held at once (each entry holds the latest probe of its group). When
// either is reached new groups are not folded: their probes pass as they are, so nothing is
// lost, and Stats.Unfolded counts them. A flood of distinct probes then costs what it costs
// without folding; memory stays bounded.
const (
	DefaultMaxGroups = 1 << 16
	DefaultMaxBytes  = 64 << 20
)

// Config sets up a Folder.
type Config struct {
	Window time.Duration // 0 passes every probe on as it is
	// Publish receives the events: the first of each group at once (on the caller's
	// goroutine), folded ones from the Folder's own goroutine. It must be safe for concurrent use.
	Publish   func(*event.Event)
	MaxGroups int // default DefaultMaxGroups
	MaxBytes  int // default DefaultMaxBytes (event.Size of the held probes)
	// Busy, when set, reports back-pressure from downstream (the store's queue filling up,
	// hub.Busy). While it holds, a new group's first probe is held too, and its window is
	// PressureFactor times as long: a flood from many sources then costs the store one event
	// per source and long window instead of two per second, and capture keeps counting every
	// probe rather than waiting for the store while the kernel drops datagrams.
	Busy func() bool
	// Now is the clock (tests); nil for time.Now.
	Now func() time.Time
}

// Stats are a Folder's counters.
type Stats struct {
	Probes   uint64 // probes offered
	Folded   uint64 // probes held into a group rather than passed on
	Emitted  uint64 // folded events passed on at a window's end
	Unfolded uint64 // probes passed on unfolded because the limits were reached
	Held     uint64 // first probes of groups held under back-pressure (Config.Busy)
	Groups   int    // groups open now
	Bytes    int    // what their held probes take (event.Size)
}

// PressureFactor stretches the window of groups opened under back-pressure (Config.Busy),
// within MaxWindow.
const PressureFactor = 5

// shards spread the lock: capture runs one goroutine per UDP socket and connection.
const shards = 16

// Folder folds identical probes. Its lifecycle is New, Add from any goroutine, Close.
type Folder struct {
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard
	now    func() time.Time

	probes, folded, emitted, unfolded, held atomic.Uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type key struct {
	src, dst, transport, method, number, agent string
}

func keyOf(e *event.Event) key {
	return key{e.SourceIP, e.DestinationIP, e.Transport, e.SIPMethod, e.CalledNumber, e.SIPUserAgent}
}

// group is one window of identical probes after the first.
type group struct {
	k        key
	deadline time.Time
	latest   *event.Event // the latest repeat; nil while none came
	repeats  int64
	size     int // event.Size of latest
	closed   bool
}

type shard struct {
	mu     sync.Mutex
	groups map[key]*group
	// The groups in the order they opened, which is the order of their deadlines (one
	// window for each queue): the sweep pops from the front. Groups opened under
	// back-pressure have the longer window, and a queue of their own.
	order, held fifo
	bytes       int
}

// fifo is a queue of groups.
type fifo struct {
	groups []*group
	head   int
}

func (q *fifo) push(g *group) { q.groups = append(q.groups, g) }

// popEnded removes the groups at the front whose windows ended by now (all of them if all)
// and calls end for each still open.
func (q *fifo) popEnded(now time.Time, all bool, end func(*group)) {
	for q.head < len(q.groups) {
		g := q.groups[q.head]
		if !all && !g.closed && now.Before(g.deadline) {
			break
		}
		q.groups[q.head] = nil
		q.head++
		if !g.closed {
			end(g)
		}
	}
	// Reuse the slice once its front half is spent.
	if q.head > 0 && q.head >= len(q.groups)/2 {
		n := copy(q.groups, q.groups[q.head:])
		clear(q.groups[n:])
		q.groups, q.head = q.groups[:n], 0
	}
}

// New returns a Folder and starts the goroutine that ends windows.
func New(cfg Config) *Folder {
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = DefaultMaxGroups
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	f := &Folder{cfg: cfg, seed: maphash.MakeSeed(), now: cfg.Now, stop: make(chan struct{}), done: make(chan struct{})}
	if f.now == nil {
		f.now = time.Now
	}
	for i := range f.shards {
		f.shards[i].groups = map[key]*group{}
	}
	if cfg.Window <= 0 {
		close(f.done)
		return f
	}
	go f.sweepLoop()
	return f
}

// tick is how often windows are ended: a folded event leaves at most a tenth of a window
// after its window ends.
func (f *Folder) tick() time.Duration {
	return min(max(f.cfg.Window/10, 5*time.Millisecond), 250*time.Millisecond)
}

func (f *Folder) sweepLoop() {
	defer close(f.done)
	t := time.NewTicker(f.tick())
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
			f.Sweep()
		}
	}
}

// Add takes one probe. Events learned from peers were folded, if at all, by the node that
// captured them, and pass as they are.
func (f *Folder) Add(e *event.Event) {
	if f.cfg.Window <= 0 || e.FromPeer {
		f.cfg.Publish(e)
		return
	}
	f.probes.Add(1)
	k := keyOf(e)
	sh := &f.shards[maphash.String(f.seed, e.SourceIP)%shards]
	now := f.now()
	sh.mu.Lock()
	g := sh.groups[k]
	if g != nil && now.Before(g.deadline) {
		size := e.Size()
		sh.bytes += size - g.size
		g.latest, g.size = e, size
		g.repeats++
		sh.mu.Unlock()
		f.folded.Add(1)
		return
	}
	var ended *event.Event
	if g != nil { // its window ended before the sweep came by
		ended = sh.end(g)
	}
	if len(sh.groups) >= f.cfg.MaxGroups/shards || sh.bytes >= f.cfg.MaxBytes/shards {
		sh.mu.Unlock()
		f.unfolded.Add(1)
		f.pass(ended)
		f.cfg.Publish(e)
		return
	}
	g = &group{k: k, deadline: now.Add(f.cfg.Window)}
	sh.groups[k] = g
	if f.cfg.Busy != nil && f.cfg.Busy() {
		sh.held.push(g)
		g.deadline = now.Add(min(PressureFactor*f.cfg.Window, MaxWindow))
		g.latest, g.size, g.repeats = e, e.Size(), 1
		sh.bytes += g.size
		sh.mu.Unlock()
		f.held.Add(1)
		f.pass(ended)
		return
	}
	sh.order.push(g)
	sh.mu.Unlock()
	f.pass(ended)
	f.cfg.Publish(e)
}

// end closes g (the shard's lock held) and returns its folded event, if any came.
func (sh *shard) end(g *group) *event.Event {
	g.closed = true
	if sh.groups[g.k] == g {
		delete(sh.groups, g.k)
	}
	sh.bytes -= g.size
	e := g.latest
	if e == nil {
		return nil
	}
	if g.repeats > 1 {
		e.RepeatCount = min(g.repeats, event.MaxRepeatCount)
	}
	g.latest = nil
	return e
}

func (f *Folder) pass(e *event.Event) {
	if e != nil {
		f.emitted.Add(1)
		f.cfg.Publish(e)
	}
}

// Sweep ends the windows that are over and passes their folded events on. The Folder's
// goroutine calls it; tests with a fake clock call it themselves.
func (f *Folder) Sweep() {
	f.sweep(false)
}

func (f *Folder) sweep(all bool) {
	now := f.now()
	var out []*event.Event
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		end := func(g *group) {
			if e := sh.end(g); e != nil {
				out = append(out, e)
			}
		}
		sh.order.popEnded(now, all, end)
		sh.held.popEnded(now, all, end)
		sh.mu.Unlock()
	}
	for _, e := range out {
		f.pass(e)
	}
}

// Close stops the Folder and passes on every folded event it still holds: nothing counted is
// lost at shutdown. Add must not be called after Close.
func (f *Folder) Close() {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		f.sweep(true)
	})
}

// Stats returns the counters.
func (f *Folder) Stats() Stats {
	s := Stats{Probes: f.probes.Load(), Folded: f.folded.Load(), Emitted: f.emitted.Load(), Unfolded: f.unfolded.Load(),
		Held: f.held.Load()}
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		s.Groups += len(sh.groups)
		s.Bytes += sh.bytes
		sh.mu.Unlock()
	}
	return s
}
