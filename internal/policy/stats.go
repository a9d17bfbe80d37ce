package policy

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Why a message got no decision.
const (
	dropUnparsable   = iota // not a SIP request, or lacks the headers a reply echoes
	dropResponse            // a SIP response: the agent sends no requests
	dropTooLarge            // over MaxMessage (UDP)
	dropConnLimit           // TCP connection refused: MaxConns open
	dropTCPOversize         // TCP message over MaxMessage: the connection is closed
	dropTCPIdle             // TCP connection idle for IdleTimeout: closed
	dropTCPSlow             // TCP message not whole within MessageTimeout: closed
	dropTCPBadLength        // TCP message with an unreadable Content-Length: closed
	dropNotAllowed          // from a source outside Allow: no answer
	dropConnPerIP           // TCP connection refused: MaxConnsPerIP open from that address
	nDrops
)

// Methods counted by name; everything else is "other".
var methodNames = [...]string{"INVITE", "ACK", "CANCEL", "OPTIONS", "MESSAGE", "other"}

type stats struct {
	decisions [nOutcomes]atomic.Uint64
	dropped   [nDrops]atomic.Uint64
	methods   [len(methodNames)]atomic.Uint64
	conns     atomic.Int64
	latency   window
}

func (s *stats) countMethod(m string) {
	for i, n := range methodNames[:len(methodNames)-1] {
		if m == n {
			s.methods[i].Add(1)
			return
		}
	}
	s.methods[len(methodNames)-1].Add(1)
}

// Status is the agent's report, shaped for JSON (GET /policy).
type Status struct {
	UDP string `json:"udp_address"`
	TCP string `json:"tcp_address"`
	// Decisions counts answered INVITE, OPTIONS and MESSAGE requests by outcome: allow,
	// deny_number, deny_source, error (the store failed), invalid (a Request-URI no
	// redirect can be made of).
	Decisions map[string]uint64 `json:"decisions"`
	// Methods counts requests by method (INVITE, ACK, CANCEL, OPTIONS, MESSAGE, other).
	Methods map[string]uint64 `json:"methods"`
	// Dropped counts messages and connections given no answer, by reason.
	Dropped        map[string]uint64 `json:"dropped"`
	TCPConnections int64             `json:"tcp_connections"`
	Latency        Latency           `json:"latency"`
}

// Latency summarises decision times (parse, lookups, reply) over the last Window.
type Latency struct {
	Window    string  `json:"window"`
	Decisions uint64  `json:"decisions"`
	P50Micros float64 `json:"p50_us"`
	P99Micros float64 `json:"p99_us"`
	MaxMicros float64 `json:"max_us"`
}

var dropNames = [nDrops]string{"unparsable", "responses", "too_large", "tcp_conn_limit", "tcp_oversize", "tcp_idle", "tcp_message_timeout", "tcp_bad_length", "not_allowed", "tcp_conn_per_ip_limit"}

// Status returns the counters and the latency of recent decisions.
func (a *Agent) Status() Status {
	s := Status{Decisions: map[string]uint64{}, Methods: map[string]uint64{}, Dropped: map[string]uint64{}}
	if u := a.UDPAddr(); u != nil {
		s.UDP = u.String()
	}
	if t := a.TCPAddr(); t != nil {
		s.TCP = t.String()
	}
	for i := range a.st.decisions {
		s.Decisions[outcomeNames[i]] = a.st.decisions[i].Load()
	}
	for i := range a.st.methods {
		s.Methods[methodNames[i]] = a.st.methods[i].Load()
	}
	for i := range a.st.dropped {
		s.Dropped[dropNames[i]] = a.st.dropped[i].Load()
	}
	s.TCPConnections = a.st.conns.Load()
	s.Latency = a.st.latency.summary(time.Now())
	return s
}

// The latency window: slots of slotSeconds, the last nSlots of them make the window. Each
// slot is a histogram with subBuckets buckets per power of two of nanoseconds, so a
// percentile is read to within 1/subBuckets (19%) of its value, at the cost of a few
// atomic adds per decision and no lock.
const (
	slotSeconds = 10
	nSlots      = 6
	subBits     = 2
	subBuckets  = 1 << subBits
	minLog      = 8  // 256 ns: everything faster counts as the first bucket
	maxLog      = 34 // 17 s: everything slower counts as the last
	nBuckets    = (maxLog - minLog + 1) * subBuckets
)

type slot struct {
	epoch   atomic.Int64 // the slot's start, in units of slotSeconds since the Unix epoch
	n       atomic.Uint64
	max     atomic.Int64
	buckets [nBuckets]atomic.Uint64
}

type window struct {
	slots [nSlots]slot
}

func bucketOf(ns int64) int {
	if ns < 1<<minLog {
		return 0
	}
	l := bits.Len64(uint64(ns)) - 1 // ns is in [2^l, 2^(l+1))
	if l > maxLog {
		return nBuckets - 1
	}
	sub := int(uint64(ns)>>(uint(l)-subBits)) & (subBuckets - 1)
	return (l-minLog)*subBuckets + sub
}

// bucketTop is the largest duration bucket b holds, in nanoseconds.
func bucketTop(b int) int64 {
	l := b/subBuckets + minLog
	sub := int64(b % subBuckets)
	return (int64(1) << l) + (sub+1)<<(l-subBits) - 1
}

func (w *window) record(d time.Duration) {
	w.recordAt(time.Now(), d)
}

func (w *window) recordAt(now time.Time, d time.Duration) {
	epoch := now.Unix() / slotSeconds
	s := &w.slots[epoch%nSlots]
	if old := s.epoch.Load(); old != epoch {
		// The first decision of a new slot clears it; a concurrent one may land just before
		// the clear and be lost, which a statistic can bear.
		if s.epoch.CompareAndSwap(old, epoch) {
			s.n.Store(0)
			s.max.Store(0)
			for i := range s.buckets {
				s.buckets[i].Store(0)
			}
		}
	}
	ns := int64(d)
	s.n.Add(1)
	s.buckets[bucketOf(ns)].Add(1)
	for {
		m := s.max.Load()
		if ns <= m || s.max.CompareAndSwap(m, ns) {
			break
		}
	}
}

func (w *window) summary(now time.Time) Latency {
	epoch := now.Unix() / slotSeconds
	var counts [nBuckets]uint64
	var total uint64
	var maxNS int64
	for i := range w.slots {
		s := &w.slots[i]
		if e := s.epoch.Load(); e <= epoch-nSlots || e > epoch {
			continue
		}
		for b := range s.buckets {
			n := s.buckets[b].Load()
			counts[b] += n
			total += n
		}
		maxNS = max(maxNS, s.max.Load())
	}
	l := Latency{Window: (nSlots * slotSeconds * time.Second).String(), Decisions: total, MaxMicros: float64(maxNS) / 1e3}
	if total == 0 {
		return l
	}
	l.P50Micros = micros(min(quantile(&counts, total, 0.50), maxNS))
	l.P99Micros = micros(min(quantile(&counts, total, 0.99), maxNS))
	return l
}

func quantile(counts *[nBuckets]uint64, total uint64, q float64) int64 {
	rank := uint64(q*float64(total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for b, n := range counts {
		seen += n
		if seen >= rank {
			return bucketTop(b)
		}
	}
	return bucketTop(nBuckets - 1)
}

func micros(ns int64) float64 { return float64(ns/10) / 100 } // two decimals
