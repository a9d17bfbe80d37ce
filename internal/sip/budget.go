package sip

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
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
// a number of replies a second, and, until the source proves it receives our packets (see
// below), at most AmplificationLimit times the bytes it sent. A probe over budget is still
// recorded; only its reply is left out, and counted.
//
// A forged address could also put an innocent host on blocklists, so every event says
// whether its source is proven (event.Event.SourceVerified). TCP and TLS sources are, by the
// handshake. A UDP source is, in responsive mode only, when its message echoes a value that
// only our replies to that very address carried:
//   - the To tag of our replies (tag): the ACK for our 404 to an INVITE, or any request that
//     goes on a dialog we answered;
//   - the nonce of our 401 challenge to a REGISTER (nonce), in an Authorization or
//     Proxy-Authorization header, for nonceBucket to 2*nonceBucket after it was issued.
// Both are HMACs of the whole address (an IPv4 address or a full IPv6 address, not its /64)
// under a secret made at New: each proves one address. After a restart the secret is new, so
// older tags and nonces no longer verify: such a message is recorded as unverified, and a
// REGISTER gets a fresh challenge. An address that proved itself is remembered for
// provenFor, and its later messages are verified too; a proof also marks the address's whole
// source (its /64) proven for the byte ratio of the reply budget.

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

// Source proofs: how long a nonce stays valid (one or two buckets), how long a proven
// address is remembered, and how many are (when the table is full a sixteenth of it, chosen
// at random, is forgotten: those addresses must prove themselves again).
const (
	tagBucket   = time.Hour // a To tag proves its source for one to two hours
	nonceBucket = 5 * time.Minute
	provenFor   = time.Hour
	maxProven   = 1 << 16
)

type replyBudget struct {
	rate  rate.Limit
	burst int
	key   []byte    // the secret of the To tags and nonces; per process
	macs  sync.Pool // HMAC states keyed with key: a proof check makes no garbage but the sum

	mu      sync.Mutex
	sources map[netip.Prefix]*sourceBudget
	proven  map[netip.Addr]time.Time // when each address last proved itself

	suppressed    atomic.Uint64 // replies left out
	verifications atomic.Uint64 // messages that proved their source by an echo
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
	return &replyBudget{rate: rate.Limit(perSecond), burst: burst, key: key,
		sources: map[netip.Prefix]*sourceBudget{}, proven: map[netip.Addr]time.Time{}}
}

// mac is the HMAC of src (the whole address) for a kind of value and a time bucket.
func (b *replyBudget) mac(kind byte, src netip.Addr, bucket int64) []byte {
	var in [1 + 8 + 16]byte
	in[0] = kind
	binary.BigEndian.PutUint64(in[1:9], uint64(bucket))
	a := src.Unmap().As16()
	copy(in[9:], a[:])
	m, _ := b.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, b.key)
	}
	m.Reset()
	m.Write(in[:])
	sum := m.Sum(nil)
	b.macs.Put(m)
	return sum
}

// tag is the To tag our replies to src carry now: only someone who receives them knows it.
func (b *replyBudget) tag(src netip.Addr) []byte { return b.tagAt(src, time.Now()) }

// tagAt is the tag of the hour of now: a tag is a proof for an hour or two, so whoever held
// an address once (a rented cloud address) cannot keep passing for it with an old tag.
func (b *replyBudget) tagAt(src netip.Addr, now time.Time) []byte {
	return hex.AppendEncode(nil, b.mac('t', src, now.Unix()/int64(tagBucket/time.Second))[:6])
}

// nonce is the nonce of the challenge we send src at now.
func (b *replyBudget) nonce(src netip.Addr, now time.Time) []byte {
	return hex.AppendEncode(nil, b.mac('n', src, now.Unix()/int64(nonceBucket/time.Second))[:16])
}

// nonceValid reports whether n is a nonce we sent src in the current or the previous bucket.
func (b *replyBudget) nonceValid(src netip.Addr, n []byte, now time.Time) bool {
	if len(n) != 32 {
		return false
	}
	return hmac.Equal(n, b.nonce(src, now)) || hmac.Equal(n, b.nonce(src, now.Add(-nonceBucket)))
}

// proof is what a request echoes of our replies to its source.
type proof struct {
	tag   bool // our To tag
	nonce bool // the nonce of a challenge we sent it, still valid
}

func (p proof) any() bool { return p.tag || p.nonce }

// check returns what m, a request from src, echoes.
func (b *replyBudget) check(m *Message, src netip.Addr, now time.Time) proof {
	var p proof
	if t := toTag(m.To); len(t) > 0 {
		p.tag = hmac.Equal(t, b.tagAt(src, now)) || hmac.Equal(t, b.tagAt(src, now.Add(-tagBucket)))
	}
	for _, cred := range [][]byte{m.Authorization, m.ProxyAuthorization} {
		if n := AuthParam(cred, "nonce"); n != nil && b.nonceValid(src, n, now) {
			p.nonce = true
			break
		}
	}
	return p
}

// verify reports whether src is proven: proved says that its message, arriving at now,
// echoed a value of ours (it is then remembered, and counted); else whether it proved itself
// within provenFor. Only a proof renews the memory, so a forger who sends in the name of a
// proven address cannot keep it proven.
func (b *replyBudget) verify(src netip.Addr, proved bool, now time.Time) bool {
	src = src.Unmap().WithZone("")
	b.mu.Lock()
	defer b.mu.Unlock()
	if proved {
		b.verifications.Add(1)
		if _, ok := b.proven[src]; !ok && len(b.proven) >= maxProven {
			n := 0
			for a := range b.proven { // map order is random
				delete(b.proven, a)
				if n++; n == maxProven/16 {
					break
				}
			}
		}
		b.proven[src] = now
		return true
	}
	at, ok := b.proven[src]
	if ok && now.Sub(at) >= provenFor {
		delete(b.proven, src)
		return false
	}
	return ok
}

// admit counts a datagram of n bytes from src, proven or not, and returns the part of replies
// the source's budget allows, in order.
func (b *replyBudget) admit(src netip.Addr, n int, proved bool, replies [][]byte) [][]byte {
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
