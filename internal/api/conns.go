package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/dialtrap/dialtrap/internal/netsource"
)

// Connections are the API's scarcest resource: a client that opens thousands of keep-alive
// connections and leaves them idle (a GET /health-check each needs no token) would otherwise
// hold every slot while a PBX's lookup waits in the kernel's backlog. The guard bounds
// connections in all and per source (an IPv4 address, an IPv6 /64); when all are taken, a new
// connection takes the slot of the connection idle longest (one that never showed the token
// first), or else of one that has sent no whole request for a second (a client talks at once;
// one that holds a slot silent is cut, besides the server's 5 s header timeout); and when a
// token is set, connections that served a request without it may stay open on at most
// anonShare of the slots (beyond it they are closed once answered).

// Default connection limits.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerSource = 64
	anonShare                = 0.75
)

type connInfo struct {
	conn      net.Conn
	source    netip.Prefix
	since     time.Time // accepted
	requested bool      // a whole request arrived on it
	idle      bool
	idleSince time.Time
	served    bool // a request was answered on it
	authed    bool // a request on it showed the token
}

type connGuard struct {
	max, perSource int
	tokenSet       bool

	mu       sync.Mutex
	conns    map[net.Conn]*connInfo
	bySource map[netip.Prefix]int
	anon     int // connections that served a request and never showed the token
	refused  uint64
	evicted  uint64
}

func newConnGuard(max, perSource int, tokenSet bool) *connGuard {
	if max <= 0 {
		max = DefaultMaxConns
	}
	if perSource <= 0 {
		perSource = DefaultMaxConnsPerSource
	}
	return &connGuard{max: max, perSource: perSource, tokenSet: tokenSet,
		conns: map[net.Conn]*connInfo{}, bySource: map[netip.Prefix]int{}}
}

// guardedListener admits accepted connections through the guard; refused ones are closed at
// once, so the accept loop never waits.
type guardedListener struct {
	net.Listener
	g *connGuard
}

func (l guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.g.admit(c) {
			return c, nil
		}
		c.Close()
	}
}

// admit takes c in, making room by closing the longest-idle connection when all slots are
// taken, or says no.
func (g *connGuard) admit(c net.Conn) bool {
	var src netip.Prefix
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		src = netsource.Of(ta.AddrPort().Addr())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bySource[src] >= g.perSource {
		g.refused++
		return false
	}
	if len(g.conns) >= g.max && !g.evictIdle() {
		g.refused++
		return false
	}
	g.conns[c] = &connInfo{conn: c, source: src, since: time.Now()}
	g.bySource[src]++
	return true
}

// silentLimit is how long a new connection may hold a slot without sending a whole request
// when all slots are taken.
const silentLimit = time.Second

// evictIdle closes, to make room, the connection idle longest that never showed the token,
// else the oldest that has been silent since it was accepted for silentLimit, else the
// longest idle of the token holders; it reports whether it found one.
func (g *connGuard) evictIdle() bool {
	var idleAnon, silent, idleAuthed *connInfo
	now := time.Now()
	for _, ci := range g.conns {
		switch {
		case ci.idle && !ci.authed:
			if idleAnon == nil || ci.idleSince.Before(idleAnon.idleSince) {
				idleAnon = ci
			}
		case ci.idle:
			if idleAuthed == nil || ci.idleSince.Before(idleAuthed.idleSince) {
				idleAuthed = ci
			}
		case !ci.requested && now.Sub(ci.since) >= silentLimit:
			if silent == nil || ci.since.Before(silent.since) {
				silent = ci
			}
		}
	}
	victim := idleAnon
	if victim == nil {
		victim = silent
	}
	if victim == nil {
		victim = idleAuthed
	}
	if victim == nil {
		return false
	}
	g.forget(victim.conn)
	victim.conn.Close() // net/http sees the close and ends the connection
	g.evicted++
	return true
}

// connState follows net/http's view of each connection: whether it is idle between requests,
// and when it is gone.
func (g *connGuard) connState(c net.Conn, st http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch st {
	case http.StateIdle:
		ci := g.conns[c]
		if ci == nil {
			return
		}
		ci.idle, ci.idleSince = true, time.Now()
		if !ci.served {
			ci.served = true
			if !ci.authed {
				g.anon++
			}
		}
		if g.tokenSet && !ci.authed && float64(g.anon) > anonShare*float64(g.max) {
			// Over the anonymous share: answered, but it may not keep a slot.
			g.forget(c)
			c.Close()
			g.evicted++
		}
	case http.StateActive:
		if ci := g.conns[c]; ci != nil {
			ci.idle = false
		}
	case http.StateClosed, http.StateHijacked:
		g.forget(c)
	}
}

func (g *connGuard) forget(c net.Conn) {
	ci := g.conns[c]
	if ci == nil {
		return
	}
	delete(g.conns, c)
	if g.bySource[ci.source]--; g.bySource[ci.source] <= 0 {
		delete(g.bySource, ci.source)
	}
	if ci.served && !ci.authed {
		g.anon--
	}
}

// requested marks the connection of a request whose headers have arrived: it is no longer
// silent.
func (g *connGuard) requested(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ci := g.conns[c]; ci != nil {
		ci.requested = true
	}
}

// authed marks the connection of a request that showed the token.
func (g *connGuard) authed(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ci := g.conns[c]; ci != nil && !ci.authed {
		ci.authed = true
		if ci.served {
			g.anon--
		}
	}
}

// maxStreamsPerSource is how many lists one source may have streaming at once: the store reads
// a few long lists at a time (8), and one slow reader must not take them all.
const maxStreamsPerSource = 2

// streamSlots counts the lists each source is being streamed.
type streamSlots struct {
	mu sync.Mutex
	n  map[netip.Prefix]int
}

// acquire takes a slot for r's source; release gives it back. ok is false when the source
// has all of its own.
func (s *streamSlots) acquire(r *http.Request) (release func(), ok bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return func() {}, true
	}
	src := netsource.Of(ap.Addr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[src] >= maxStreamsPerSource {
		return nil, false
	}
	s.n[src]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.n[src]--; s.n[src] <= 0 {
			delete(s.n, src)
		}
	}, true
}

// connKey carries the request's connection in its context, for authed.
type connKey struct{}

func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

func connOf(r *http.Request) net.Conn {
	c, _ := r.Context().Value(connKey{}).(net.Conn)
	return c
}
