package sip

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/dialtrap/dialtrap/internal/netsource"
)

// A UDP source address can be forged: without limits, responsive mode would answer a flood
// of small forged probes with larger replies to their victim (a 38-byte probe drew 322
// bytes). The reply budget bounds what any one source (an IPv4 address, an IPv6 /64) gets:
// a number of replies a second, and, until the source proves it receives our packets by
// echoing the To tag of one of our replies, at most AmplificationLimit times the bytes it
// sent. A probe over budget is still recorded; only its reply is left out, and counted.

// AmplificationLimit is how many bytes an unproven source may get back per byte it sent.
const AmplificationLimit = 3

// Reply budget defaults.
const (
	DefaultReplyRate  = 20 // replies a second per source
	DefaultReplyBurst = 40
)

// maxBudgets bounds the table of sources; when it is full, a sixteenth of it, chosen at
// random, is forgotten (a forged source may then get a new budget, still bound by the byte
// ratio; the others keep theirs).
const maxBudgets = 1 << 16

type replyBudget struct {
	rate  rate.Limit
	burst int
	key   []byte // the secret of the To tags

	mu      sync.Mutex
	sources map[netip.Prefix]*sourceBudget

	suppressed atomic.Uint64 // replies left out
}

type sourceBudget struct {
	lim        *rate.Limiter
	recv, sent int
	proven     bool
}

func newReplyBudget(perSecond float64, burst int) *replyBudget {
	if perSecond <= 0 {
		perSecond = DefaultReplyRate
	}
	if burst <= 0 {
		burst = DefaultReplyBurst
	}
	key := make([]byte, 32)
	rand.Read(key)
	return &replyBudget{rate: rate.Limit(perSecond), burst: burst, key: key, sources: map[netip.Prefix]*sourceBudget{}}
}

// tag is the To tag our replies to src carry: only someone who receives them knows it.
func (b *replyBudget) tag(src netip.Addr) []byte {
	m := hmac.New(sha256.New, b.key)
	k := netsource.Of(src)
	m.Write(k.Addr().AsSlice())
	return hex.AppendEncode(nil, m.Sum(nil)[:6])
}

// admit counts a datagram of n bytes from src, whose To tag is toTag, and returns the part of
// replies the source's budget allows, in order.
func (b *replyBudget) admit(src netip.Addr, n int, toTag []byte, replies [][]byte) [][]byte {
	proved := len(toTag) > 0 && hmac.Equal(toTag, b.tag(src))
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	k := netsource.Of(src)
	sb, ok := b.sources[k]
	if !ok {
		if len(b.sources) >= maxBudgets {
			n := 0
			for k := range b.sources { // map order is random
				delete(b.sources, k)
				if n++; n == maxBudgets/16 {
					break
				}
			}
		}
		sb = &sourceBudget{lim: rate.NewLimiter(b.rate, b.burst)}
		b.sources[k] = sb
	}
	sb.recv += n
	sb.proven = sb.proven || proved
	for i, r := range replies {
		if !sb.proven && sb.sent+len(r) > AmplificationLimit*sb.recv || !sb.lim.AllowN(now, 1) {
			b.suppressed.Add(uint64(len(replies) - i))
			return replies[:i]
		}
		sb.sent += len(r)
	}
	return replies
}

// toTag returns the tag parameter of a To header value, or nil.
func toTag(v []byte) []byte {
	if gt := bytes.LastIndexByte(v, '>'); gt >= 0 {
		v = v[gt:]
	}
	for {
		semi := bytes.IndexByte(v, ';')
		if semi < 0 {
			return nil
		}
		v = bytes.TrimLeft(v[semi+1:], " \t")
		if hasPrefixFold(v, "tag=") {
			v = v[len("tag="):]
			if end := bytes.IndexAny(v, "; \t"); end >= 0 {
				v = v[:end]
			}
			return v
		}
	}
}
