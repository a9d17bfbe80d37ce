// Package intel joins what dialtrap reads from an attack into the two places that use it:
// Enrich, on the capture path, names the tool from the message's shape and lists its
// payloads (allocation-free unless a payload is found); Labeler, beside the store, gives an
// event's origin country and the target of its dialled number, which cost more and so are
// worked out when the event is written, not when it is captured.
package intel

import (
	"sync"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/fingerprint"
	"github.com/dialtrap/dialtrap/internal/geo"
	"github.com/dialtrap/dialtrap/internal/numberintel"
	"github.com/dialtrap/dialtrap/internal/payload"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
)

// maxFindings bounds the payloads kept from one message (there are four kinds, and a
// message has a Request-URI and a few dozen headers).
const maxFindings = 16

// Enrich sets e's tool, ua_spoofed and payload from m (parsed from raw). It is the
// sip.Config.Enrich of a node.
func Enrich(m *sip.Message, raw []byte, e *event.Event) {
	if m.Kind == sip.Request {
		r := fingerprint.Identify(m, raw)
		e.Tool, e.UASpoofed = r.Tool, r.UASpoofed
	}
	var buf [maxFindings]payload.Finding
	found := payload.Detect(raw, buf[:0])
	if len(found) == 0 {
		return
	}
	e.Payload = make([]event.Payload, min(len(found), maxFindings))
	for i := range e.Payload {
		e.Payload[i] = event.Payload{Kind: found[i].Kind, Where: found[i].Where}
	}
}

// cacheSize bounds the numbers a Labeler remembers: a scan dials the same few numbers
// thousands of times, and analysing one costs 20-30 µs.
const cacheSize = 1 << 16

// Labeler is the store.Labeler of a node. Home is the ISO region (DE) that numbers dialled
// without an international prefix are read in; "" leaves them as digits.
type Labeler struct {
	home string
	mu   sync.Mutex
	nums map[string]numberintel.Info
}

// NewLabeler returns a Labeler reading national numbers as in region home.
func NewLabeler(home string) *Labeler {
	return &Labeler{home: home, nums: make(map[string]numberintel.Info)}
}

// Country returns the ISO code of ip's country, or geo.Unknown.
func (l *Labeler) Country(ip string) string { return geo.CountryOf(ip) }

// Number returns what the dialled string n says (store.Labeler).
func (l *Labeler) Number(n string) store.NumberInfo {
	a := l.Analyze(n)
	return store.NumberInfo{Prefix: a.Prefix, Target: a.Target, Country: a.Country, Type: a.Type}
}

// maxNumber is the longest dialled string analysed (and cached): no numbering plan has
// numbers anywhere near it, and a To URI may hold 64 KiB of junk a scanner varies at will.
const maxNumber = 64

// Analyze is numberintel.Analyze in the labeler's home region, from the cache when n was
// seen lately: what the store counts. Longer strings than maxNumber are no number.
func (l *Labeler) Analyze(n string) numberintel.Info { return l.analyze(n, true) }

// Lookup is Analyze for a number asked through the API: it reads the cache but does not
// fill it, so a burst of lookups of numbers never dialled cannot evict the writer's.
func (l *Labeler) Lookup(n string) numberintel.Info { return l.analyze(n, false) }

func (l *Labeler) analyze(n string, keep bool) numberintel.Info {
	if len(n) > maxNumber {
		return numberintel.Info{Dialled: n, Target: n}
	}
	l.mu.Lock()
	info, ok := l.nums[n]
	l.mu.Unlock()
	if ok {
		return info
	}
	info = numberintel.Analyze(n, l.home)
	if keep {
		l.mu.Lock()
		if len(l.nums) >= cacheSize {
			clear(l.nums) // cheaper than an LRU, and a scan's numbers come back within a batch
		}
		l.nums[n] = info
		l.mu.Unlock()
	}
	return info
}
