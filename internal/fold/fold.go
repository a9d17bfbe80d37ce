// Package fold turns a flood of identical probes into a few events. A scanner repeating one
// probe at line rate would otherwise cost a row, a JSON log line and a webhook record a probe:
// storage would grow with the attacker's rate, not with what the attacker says.
//
// Probes are alike when they share source address, destination address, transport, SIP
// method, called number and User-Agent (and whether the source was proven). The first of each
// group is passed on at once, so nothing is delayed; the probes alike within the window after
// it are only counted, and when the window ends one event stands for them: a copy of the
// first with a fresh UUID, the time of the last, and a RepeatCount saying how many probes it
// stands for. Every count downstream adds that weight (event.Weight), so aggregates still
// count every probe.
//
// Capture asks Repeat before it makes an event: a probe folded into an open group costs a
// hash and a counter, not an event, its enrichment and its place in every queue.
package fold

import (
	"hash/maphash"
	"net/netip"
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
	// Publish receives the events: the first of each group at once (on the goroutine of
	// Open), folded ones from the Folder's own goroutine. It must be safe for concurrent use.
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
	Probes   uint64 // probes offered: Folded, and those handed to Open
	Folded   uint64 // probes counted into an open group rather than passed on
	Emitted  uint64 // folded events passed on at a window's end
	Unfolded uint64 // probes passed on unfolded because the limits were reached
	Held     uint64 // first probes of groups held under back-pressure (Config.Busy)
	Groups   int    // groups open now
	Bytes    int    // what their held probes take (event.Size)
}

// shards spread the lock: capture runs one goroutine per CPU on the UDP socket, and one per
// TCP or TLS connection.
const shards = 16

// PressureFactor stretches the window of groups opened under back-pressure (Config.Busy),
// within MaxWindow.
const PressureFactor = 5

// maxRepeatCount is the most probes one event may stand for (event.MaxRepeatCount, which a
// peer checks); a variable so that tests can reach it.
var maxRepeatCount int64 = event.MaxRepeatCount

// Probe is what makes probes alike, read from a message before it becomes an event.
type Probe struct {
	Source, Dest netip.Addr
	Transport    string
	// Verified: a proven source (event.SourceVerified) is other evidence than a forged one.
	Verified              bool
	Method, Number, Agent []byte // as sent
	// Content tells apart messages that carry none of the above (not SIP: junk, a TLS
	// hello on the UDP port): their first bytes. Capture sets it for those only.
	Content []byte

	hash   uint64
	hashed bool
}

// Folder folds probes alike. Its lifecycle is New; Repeat, then Open for probes it did not
// fold, from any goroutine; Close.
type Folder struct {
	cfg    Config
	seed   maphash.Seed
	shards [shards]shard
	now    func() time.Time

	// Counted off the hot path where they can be: a folded probe adds to folded only, and
	// the probes offered are the folded ones and those Open took.
	opened, folded, emitted, unfolded, held atomic.Uint64

	stop chan struct{}
	done chan struct{}
	once sync.Once
	// idle is set while the sweeper sleeps with no group open (no timer running: an idle
	// node does not wake for it); the Open that finds it set wakes the sweeper.
	idle atomic.Bool
	wake chan struct{}
	owed owed
	// sweeps counts the sweeper's wake-ups (tests).
	sweeps atomic.Int64
}

// group is the first probe of a window and what came alike after it.
type group struct {
	hash                  uint64
	src, dst              netip.Addr
	transport             string
	verified              bool
	method, number, agent string // raw, to tell a hash collision from a repeat
	content               string

	first    *event.Event // passed on when the group opened, unless held
	held     bool         // opened under back-pressure: first not passed on yet
	repeats  int64
	last     time.Time // of the latest repeat
	deadline time.Time
	size     int // event.Size of first
	closed   bool
}

func (g *group) matches(p *Probe) bool {
	return g.src == p.Source && g.dst == p.Dest && g.transport == p.Transport && g.verified == p.Verified &&
		g.method == string(p.Method) && g.number == string(p.Number) && g.agent == string(p.Agent) &&
		g.content == string(p.Content)
}

type shard struct {
	mu     sync.Mutex
	groups map[uint64]*group
	// The groups in the order they opened, which is the order of their deadlines (one
	// window for each queue): the sweep pops from the front. Groups opened under
	// back-pressure have the longer window, and a queue of their own.
	order, held fifo
	bytes       int
	// closed is set by Close's last sweep: no group opens after it, since no sweep would
	// end it.
	closed bool
	owed   *owed // the Folder's
}

// owed counts the groups that owe an event at their window's end (repeats to fold, or a
// held first probe). While none does, windows need ending only to free their groups, and the
// sweeper wakes once a window instead of ten times: at a few probes a second, each of which
// opens a group, that was a wake-up a probe.
type owed struct {
	n    atomic.Int64
	wake chan struct{} // signalled when n leaves 0
}

func (o *owed) add() {
	if o.n.Add(1) == 1 {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

func (o *owed) done() { o.n.Add(-1) }

// fifo is a queue of window ends, in the order they were set: with one window length a
// queue, the order of their times.
type fifo struct {
	ends []windowEnd
	head int
}

// windowEnd is when a window of g ends. A group whose window moved on (a flood going on) has
// a later end queued too; the earlier one no longer matches its deadline and is skipped.
type windowEnd struct {
	g  *group
	at time.Time
}

func (q *fifo) push(g *group) { q.ends = append(q.ends, windowEnd{g, g.deadline}) }

// popEnded removes the window ends at the front that are past by now (all of them if all)
// and calls end for each group whose current window it is.
func (q *fifo) popEnded(now time.Time, all bool, end func(*group)) {
	for q.head < len(q.ends) {
		w := q.ends[q.head]
		if !all && now.Before(w.at) {
			break
		}
		q.ends[q.head] = windowEnd{}
		q.head++
		if !w.g.closed && w.g.deadline.Equal(w.at) {
			end(w.g)
		}
	}
	// Reuse the slice once its front half is spent.
	if q.head > 0 && q.head >= len(q.ends)/2 {
		n := copy(q.ends, q.ends[q.head:])
		clear(q.ends[n:])
		q.ends, q.head = q.ends[:n], 0
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
	f := &Folder{cfg: cfg, seed: maphash.MakeSeed(), now: cfg.Now, stop: make(chan struct{}), done: make(chan struct{}),
		wake: make(chan struct{}, 1)}
	if f.now == nil {
		f.now = time.Now
	}
	f.owed.wake = make(chan struct{}, 1)
	for i := range f.shards {
		f.shards[i].groups = map[uint64]*group{}
		f.shards[i].owed = &f.owed
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
	t := time.NewTimer(f.tick())
	defer t.Stop()
	armed := time.Duration(0) // the period t runs for; 0: stopped or fired
	for {
		open := f.open()
		if open == 0 {
			// Nothing open: sleep until an Open. idle is set before the second look, so an
			// Open that the look missed finds it set and wakes the loop.
			t.Stop()
			armed = 0
			f.idle.Store(true)
			if f.open() == 0 || !f.idle.CompareAndSwap(true, false) {
				select {
				case <-f.stop:
					return
				case <-f.wake:
				}
			}
		}
		// Groups that owe nothing only need freeing: once a window is soon enough, unless
		// they crowd the limits (a flood from many sources, each probing once: the sooner
		// they go, the more of the flood folds).
		period := f.cfg.Window
		if f.owed.n.Load() > 0 || open > f.cfg.MaxGroups/4 {
			period = f.tick()
		}
		if period != armed {
			t.Reset(period)
			armed = period
		}
		select {
		case <-f.stop:
			return
		case <-f.owed.wake:
			continue // something is owed now: tick at the short period
		case <-t.C:
			armed = 0
			f.sweeps.Add(1)
			f.Sweep()
		}
	}
}

// open is the number of groups open.
func (f *Folder) open() int {
	n := 0
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		n += len(sh.groups)
		sh.mu.Unlock()
	}
	return n
}

func (f *Folder) hashOf(p *Probe) uint64 {
	if !p.hashed {
		var h maphash.Hash
		h.SetSeed(f.seed)
		src, dst := p.Source.As16(), p.Dest.As16()
		h.Write(src[:])
		h.Write(dst[:])
		h.WriteString(p.Transport)
		if p.Verified {
			h.WriteByte(1)
		}
		for _, b := range [...][]byte{p.Method, p.Number, p.Agent, p.Content} {
			h.WriteByte(byte(len(b))) // fields end apart: ("ab","c") is not ("a","bc")
			h.Write(b)
			h.WriteByte(0)
		}
		p.hash, p.hashed = h.Sum64(), true
	}
	return p.hash
}

// Repeat reports whether p is alike the first probe of an open group: it is then counted
// there, and the caller makes no event of it. Otherwise the caller makes p's event and hands
// it to Open.
func (f *Folder) Repeat(p *Probe) bool {
	if f.cfg.Window <= 0 {
		return false
	}
	h := f.hashOf(p)
	sh := &f.shards[h%shards]
	now := f.now()
	sh.mu.Lock()
	g := sh.groups[h]
	if g == nil || g.closed || !g.matches(p) {
		sh.mu.Unlock()
		return false
	}
	var ended *event.Event
	switch {
	case !now.Before(g.deadline) && (g.held || g.repeats == 0):
		// The window is over and nothing alike came in it: p starts anew.
		sh.mu.Unlock()
		return false
	case !now.Before(g.deadline) || g.repeats >= maxRepeatCount || g.held && 1+g.repeats >= maxRepeatCount:
		// The flood goes on past the window (or its event cannot stand for one probe
		// more): the window's event passes, and p is the first repeat of the next window.
		if g.held {
			ended = sh.end(g) // a held group's event stands for its first too: it ends
			sh.mu.Unlock()
			f.pass(ended)
			return false
		}
		ended = sh.roll(g, now, f.cfg.Window)
	}
	if g.repeats++; g.repeats == 1 && !g.held {
		sh.owed.add()
	}
	g.last = now
	sh.mu.Unlock()
	f.folded.Add(1)
	f.pass(ended)
	return true
}

// Open passes e, the event of probe p that Repeat did not fold, on at once, and opens a group
// for the probes alike that follow within the window. Under back-pressure (Config.Busy) e is
// held with its group instead, and passed on when the group ends.
func (f *Folder) Open(p *Probe, e *event.Event) {
	if f.cfg.Window <= 0 {
		f.cfg.Publish(e)
		return
	}
	f.opened.Add(1)
	h := f.hashOf(p)
	sh := &f.shards[h%shards]
	now := f.now()
	sh.mu.Lock()
	if sh.closed {
		// Capture outlived Close (the node's wait for it timed out): e passes as it is.
		sh.mu.Unlock()
		f.cfg.Publish(e)
		return
	}
	var ended *event.Event
	if g := sh.groups[h]; g != nil {
		if now.Before(g.deadline) {
			// Opened by another goroutine since Repeat, or a hash collision: e passes alone.
			sh.mu.Unlock()
			f.cfg.Publish(e)
			return
		}
		ended = sh.end(g) // its window ended before the sweep came by
	}
	if len(sh.groups) >= f.cfg.MaxGroups/shards || sh.bytes >= f.cfg.MaxBytes/shards {
		sh.mu.Unlock()
		f.unfolded.Add(1)
		f.pass(ended)
		f.cfg.Publish(e)
		return
	}
	g := &group{hash: h, src: p.Source, dst: p.Dest, transport: p.Transport, verified: p.Verified,
		method: string(p.Method), number: string(p.Number), agent: string(p.Agent), content: string(p.Content),
		first: e, deadline: now.Add(f.cfg.Window), size: e.Size()}
	g.size += len(g.method) + len(g.number) + len(g.agent) + len(g.content)
	sh.groups[h] = g
	sh.bytes += g.size
	if f.cfg.Busy != nil && f.cfg.Busy() {
		g.held = true
		g.deadline = now.Add(min(PressureFactor*f.cfg.Window, MaxWindow))
		sh.held.push(g)
		sh.owed.add()
		sh.mu.Unlock()
		f.awake()
		f.held.Add(1)
		f.pass(ended)
		return
	}
	sh.order.push(g)
	sh.mu.Unlock()
	f.awake()
	f.pass(ended)
	f.cfg.Publish(e)
}

// awake wakes the sweeper if it sleeps: a group was just opened.
func (f *Folder) awake() {
	if f.idle.Load() && f.idle.CompareAndSwap(true, false) {
		f.wake <- struct{}{}
	}
}

// roll ends g's window (the shard's lock held) with the event standing for its repeats, and
// starts the next window of the same group: a flood that goes on costs one event a window,
// and its probes after the first window take no new event at all.
func (sh *shard) roll(g *group, now time.Time, window time.Duration) *event.Event {
	e := g.first.Folded(g.last, min(g.repeats, maxRepeatCount))
	g.repeats, g.deadline = 0, now.Add(window)
	sh.order.push(g)
	sh.owed.done()
	return e
}

// end closes g (the shard's lock held) and returns the event that stands for what it holds
// not yet passed on, if anything.
func (sh *shard) end(g *group) *event.Event {
	if g.held || g.repeats > 0 {
		sh.owed.done()
	}
	g.closed = true
	if sh.groups[g.hash] == g {
		delete(sh.groups, g.hash)
	}
	sh.bytes -= g.size
	first := g.first
	g.first = nil
	switch {
	case g.held && g.repeats == 0:
		return first
	case g.held:
		// Never passed on: it becomes the one event of its group.
		first.Timestamp, first.RepeatCount = event.FormatTime(g.last), min(1+g.repeats, maxRepeatCount)
		return first
	case g.repeats == 0:
		return nil
	}
	return first.Folded(g.last, min(g.repeats, maxRepeatCount))
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
			var e *event.Event
			if !all && !g.held && g.repeats > 0 {
				e = sh.roll(g, now, f.cfg.Window) // the flood may go on: see Repeat
			} else {
				e = sh.end(g)
			}
			if e != nil {
				out = append(out, e)
			}
		}
		sh.order.popEnded(now, all, end)
		sh.held.popEnded(now, all, end)
		sh.closed = sh.closed || all
		sh.mu.Unlock()
	}
	for _, e := range out {
		f.pass(e)
	}
}

// Close stops the Folder and passes on everything it still holds: nothing counted is lost at
// shutdown. Probes offered after Close are passed on as they are, unfolded.
func (f *Folder) Close() {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		f.sweep(true)
	})
}

// Stats returns the counters.
func (f *Folder) Stats() Stats {
	s := Stats{Probes: f.opened.Load() + f.folded.Load(), Folded: f.folded.Load(), Emitted: f.emitted.Load(), Unfolded: f.unfolded.Load(),
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
