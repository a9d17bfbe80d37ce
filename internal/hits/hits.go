// Package hits records lookups that matched a known-bad entry (a "hit": a PBX asked about a
// number or an address the honeypots have seen) and raises alerts on them. Hits are kept in a
// bounded ring in memory, newest first for /hits; they do not survive a restart. Recording is
// cheap and never blocks the lookup: the ring takes a short lock, and hits reach the alert
// rules through a bounded queue whose overflow is counted, not waited for.
package hits

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

// Kinds of lookups.
const (
	KindIP     = "ip"
	KindNumber = "number"
)

// Sources of hits.
const (
	SourceAPI    = "api"
	SourcePolicy = "policy"
)

// Hit is one lookup that matched. The JSON form is what /hits lists.
type Hit struct {
	Time        string `json:"time"` // event_timestamp form, UTC
	Kind        string `json:"kind"` // ip or number
	Value       string `json:"value"`
	Matched     string `json:"matched"` // the entry's key (another number under the national match)
	SeenCount   int64  `json:"seen_count,string"`
	SeenLocally bool   `json:"seen_locally"`
	SeenByPeers int64  `json:"seen_by_peers"`
	Client      string `json:"client"` // the asking client's address
	Token       string `json:"token"`  // the API token's name; "" without tokens
	Source      string `json:"source"` // api or policy

	// For the alert rules and texts; not in /hits.
	SeenByTrustedPeers int64  `json:"-"`
	SeenLast           string `json:"-"`

	at time.Time // when Time is empty: formatted when read, not on the lookup path
}

// stamped returns h with its Time set.
func (h Hit) stamped() Hit {
	if h.Time == "" {
		h.Time = event.FormatTime(h.at)
	}
	return h
}

// Notifier delivers an alert. Notify must not block for long (spool it, or write a line).
type Notifier interface {
	Name() string
	Notify(a Alert) error
}

// Rules decide which hits raise an alert.
type Rules struct {
	// Window: an alert on the first hit per entry per window (default 10m).
	Window time.Duration
	// MinCount: only entries seen at least this often (default 1).
	MinCount int64
	// Source: local (seen by this node's trap), trusted (or by trusted peers; the default),
	// or all.
	Source string
}

// Config is what a Recorder needs.
type Config struct {
	Capacity int // hits kept for /hits, and waiting for the alert rules; default 10,000
	// Poll is how often the alert rules read the hits recorded since they last looked
	// (default 100ms): the lookup path only writes the ring, never wakes anyone.
	Poll      time.Duration
	Rules     Rules
	Notifiers []Notifier // none: hits are recorded, no alert is raised
	Log       *slog.Logger
	Now       func() time.Time
}

// Recorder keeps recent hits and raises alerts.
type Recorder struct {
	cfg Config

	mu    sync.Mutex
	ring  []Hit
	next  int    // where the next hit goes
	total uint64 // hits recorded since start

	seen     uint64        // hits the alert rules have read (of total)
	dropped  atomic.Uint64 // hits overwritten before the alert rules read them
	alerts   atomic.Uint64 // alerts raised
	notified []notifierStats
	last     map[string]time.Time // entry -> time of its last alert
	done     chan struct{}
	stop     context.CancelFunc
}

type notifierStats struct {
	name       string
	sent, fail atomic.Uint64
}

// New returns a recorder; Start runs its alerting.
func New(cfg Config) *Recorder {
	if cfg.Capacity <= 0 {
		cfg.Capacity = 10000
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 100 * time.Millisecond
	}
	if cfg.Rules.Window <= 0 {
		cfg.Rules.Window = 10 * time.Minute
	}
	if cfg.Rules.MinCount <= 0 {
		cfg.Rules.MinCount = 1
	}
	if cfg.Rules.Source == "" {
		cfg.Rules.Source = "trusted"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Recorder{cfg: cfg, ring: make([]Hit, 0, min(cfg.Capacity, 1024)), last: map[string]time.Time{},
		notified: make([]notifierStats, len(cfg.Notifiers))}
	for i, n := range cfg.Notifiers {
		r.notified[i].name = n.Name()
	}
	return r
}

// Record keeps h (its Time now when empty). It takes a short lock and never waits for the
// alert rules: they read the ring on their own time, and a hit overwritten before they read
// it is counted as dropped.
func (r *Recorder) Record(h Hit) {
	if h.Time == "" {
		h.at = r.cfg.Now()
	}
	r.mu.Lock()
	if len(r.ring) < r.cfg.Capacity {
		r.ring = append(r.ring, h)
	} else {
		r.ring[r.next] = h
	}
	r.next = (r.next + 1) % r.cfg.Capacity
	r.total++
	r.mu.Unlock()
}

// unread returns the hits recorded since the alert rules last looked, oldest first.
func (r *Recorder) unread(buf []Hit) []Hit {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.total - r.seen
	if kept := uint64(len(r.ring)); n > kept {
		r.dropped.Add(n - kept)
		n = kept
	}
	for i := n; i > 0; i-- {
		j := ((r.next-int(i))%len(r.ring) + len(r.ring)) % len(r.ring)
		buf = append(buf, r.ring[j])
	}
	r.seen = r.total
	return buf
}

// Page returns the number of hits recorded since start and the kept ones from offset on,
// newest first, at most limit of them (0: all).
func (r *Recorder) Page(limit, offset int) (total uint64, out []Hit) {
	r.mu.Lock()
	n := len(r.ring)
	if offset >= n || limit < 0 {
		total = r.total
		r.mu.Unlock()
		return total, []Hit{}
	}
	k := n - offset
	if limit > 0 && limit < k {
		k = limit
	}
	out = make([]Hit, 0, k)
	for i := range k {
		// the newest is just before next
		out = append(out, r.ring[((r.next-1-offset-i)%n+n)%n])
	}
	total = r.total
	r.mu.Unlock()
	// Formatted outside the lock that every lookup's Record takes.
	for i := range out {
		out[i] = out[i].stamped()
	}
	return total, out
}

// Stats are the recorder's counters.
type Stats struct {
	Hits      uint64 // recorded since start
	FellOut   uint64 // pushed out of the ring by newer ones
	Dropped   uint64 // not seen by the alert rules: overwritten in the ring before they looked
	Alerts    uint64 // alerts raised
	Notifiers []NotifierStats
}

// NotifierStats count one notifier's deliveries (handed to its spool or written) and
// failures.
type NotifierStats struct {
	Name         string
	Sent, Failed uint64
}

// Stats returns the counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	st := Stats{Hits: r.total, FellOut: r.total - uint64(len(r.ring))}
	r.mu.Unlock()
	st.Dropped, st.Alerts = r.dropped.Load(), r.alerts.Load()
	for i := range r.notified {
		n := &r.notified[i]
		st.Notifiers = append(st.Notifiers, NotifierStats{n.name, n.sent.Load(), n.fail.Load()})
	}
	return st
}

// Start runs the alert rules until Close.
func (r *Recorder) Start() {
	if len(r.cfg.Notifiers) == 0 || r.done != nil {
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	r.stop, r.done = stop, make(chan struct{})
	go func() {
		defer close(r.done)
		tick := time.NewTicker(r.cfg.Poll)
		defer tick.Stop()
		var buf []Hit
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			buf = r.unread(buf[:0])
			for _, h := range buf {
				r.consider(h)
			}
		}
	}()
}

// Close stops the alert rules; hits not yet read are considered first.
func (r *Recorder) Close() {
	if r.done == nil {
		return
	}
	r.stop()
	<-r.done
	for _, h := range r.unread(nil) {
		r.consider(h)
	}
}

// consider applies the rules to h and notifies when it passes them.
func (r *Recorder) consider(h Hit) {
	h = h.stamped()
	rules := r.cfg.Rules
	if h.SeenCount < rules.MinCount {
		return
	}
	switch rules.Source {
	case "local":
		if !h.SeenLocally {
			return
		}
	case "trusted":
		if !h.SeenLocally && h.SeenByTrustedPeers == 0 {
			return
		}
	}
	now := r.cfg.Now()
	key := h.Kind + "\x00" + h.Matched
	if t, ok := r.last[key]; ok && now.Sub(t) < rules.Window {
		return
	}
	if len(r.last) >= 4*r.cfg.Capacity { // forget entries whose window has passed
		for k, t := range r.last {
			if now.Sub(t) >= rules.Window {
				delete(r.last, k)
			}
		}
		if len(r.last) >= 4*r.cfg.Capacity {
			// Still full within one window: start afresh rather than grow, or rescan at
			// every alert. At worst an entry alerts twice in its window.
			r.last = map[string]time.Time{}
		}
	}
	r.last[key] = now
	r.alerts.Add(1)
	a := NewAlert(h)
	for i, n := range r.cfg.Notifiers {
		if err := n.Notify(a); err != nil {
			r.notified[i].fail.Add(1)
			r.cfg.Log.Warn("hit alert not delivered", "notifier", n.Name(), "err", err)
			continue
		}
		r.notified[i].sent.Add(1)
	}
}

// Alert is what a notifier delivers: the hit, the entry and a short reason.
type Alert struct {
	Alert  string `json:"alert"` // "hit"
	Time   string `json:"time"`
	Kind   string `json:"kind"`
	Value  string `json:"value"`
	Entry  Entry  `json:"entry"`
	Client string `json:"client"`
	Token  string `json:"token"`
	Source string `json:"source"`
	Reason string `json:"reason"`
}

// Entry is the known-bad entry a lookup matched.
type Entry struct {
	Key                string `json:"key"`
	SeenCount          int64  `json:"seen_count,string"`
	SeenLast           string `json:"seen_last"`
	SeenLocally        bool   `json:"seen_locally"`
	SeenByPeers        int64  `json:"seen_by_peers"`
	SeenByTrustedPeers int64  `json:"seen_by_trusted_peers"`
}

// NewAlert makes the alert for h.
func NewAlert(h Hit) Alert {
	a := Alert{Alert: "hit", Time: h.Time, Kind: h.Kind, Value: h.Value, Client: h.Client, Token: h.Token, Source: h.Source,
		Entry: Entry{Key: h.Matched, SeenCount: h.SeenCount, SeenLast: h.SeenLast, SeenLocally: h.SeenLocally,
			SeenByPeers: h.SeenByPeers, SeenByTrustedPeers: h.SeenByTrustedPeers}}
	a.Reason = reason(h)
	return a
}

func reason(h Hit) string {
	what := "address"
	if h.Kind == KindNumber {
		what = "number"
	}
	s := fmt.Sprintf("%s %s matched", what, h.Value)
	if h.Matched != h.Value {
		s += " (as " + h.Matched + ")"
	}
	times := "times"
	if h.SeenCount == 1 {
		times = "time"
	}
	s += ", seen " + strconv.FormatInt(h.SeenCount, 10) + " " + times
	if h.SeenLast != "" {
		s += ", last " + h.SeenLast
	}
	var by []string
	if h.SeenLocally {
		by = append(by, "this node")
	}
	if h.SeenByPeers > 0 {
		by = append(by, fmt.Sprintf("%d peers (%d trusted)", h.SeenByPeers, h.SeenByTrustedPeers))
	}
	if len(by) > 0 {
		s += " by " + by[0]
		if len(by) > 1 {
			s += " and " + by[1]
		}
	}
	s += "; asked"
	switch {
	case h.Source == SourcePolicy:
		s += " through the SIP policy agent"
	case h.Token != "":
		s += " by token " + h.Token
	}
	if h.Client != "" {
		s += " from " + h.Client
	}
	return s
}
