// Package policy is the SIP policy agent: a stateless redirect server that a PBX or SBC asks,
// with the outbound INVITE itself (or an OPTIONS or MESSAGE), whether a call may be placed.
// It answers 302 back to the original Request-URI when neither the dialled number nor the
// caller's address is known-bad, and 403, 404 or a 302 to an IVR when one is, with a Reason
// header saying why. It never forwards a call. See docs/policy-agent.md.
package policy

import (
	"context"
	"errors"
	"fmt"
	"github.com/dialtrap/dialtrap/internal/hits"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/ratelog"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Lookups is what the agent asks the store. The SQLite store (and so anything that satisfies
// api.Lookups) implements it. A backend that also has PrepareLookups() gets it called once
// at Start, so misses are answered from memory.
type Lookups interface {
	IP(ctx context.Context, ip string) (store.Aggregate, bool, error)
	Number(ctx context.Context, number string) (store.Aggregate, bool, error)
	MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error)
}

// DefaultCallerHeader names the header a proxy puts the caller's address in.
const DefaultCallerHeader = "X-Dialtrap-Caller"

// Defaults of the zero Config fields.
const (
	DefaultLookupTimeout  = 200 * time.Millisecond
	DefaultMaxConns       = 1024
	DefaultMaxConnsPerIP  = 64
	DefaultMaxMessage     = 64 << 10
	DefaultIdleTimeout    = 60 * time.Second
	DefaultMessageTimeout = 5 * time.Second
	DefaultReadBuffer     = 8 << 20
)

// Config tells an Agent where to listen and how to decide.
type Config struct {
	// Addr is the UDP and TCP listen address (host:port; port 0 picks a free one).
	Addr    string
	Lookups Lookups
	// National also matches the dialled number against stored numbers under the national
	// match (event.NumbersMatch), as GET /numbers/{n}?match=national does.
	National bool
	// MinCount is the fewest sightings (summed over national matches) that make a number or
	// an IP known-bad; 0 means 1.
	MinCount int64
	// VerifiedOnly counts a number or IP only when a sighting had a proven source address.
	VerifiedOnly bool
	// Source says whose sightings make a number or an address known-bad: this node's own and
	// its trusted peers' (store.SourceTrusted, the default, as the feeds), only its own, or
	// any peer's. With peer-to-peer on, SourceAll lets any peer choose which calls are refused.
	Source store.Source
	// TrustedHops is how many Via headers at the top belong to proxies the operator runs, the
	// one asking included (default 1): the Via below them is the caller's as the first of
	// them received it, marked with received= where the caller's own sent-by differed. Every
	// address that Via names is checked, beside the caller headers.
	TrustedHops int
	// Allow lists the sources that may ask (the PBXs, SBCs, proxies); others get no answer,
	// counted. Empty: anyone who can reach the address.
	Allow []netip.Prefix
	// IPGuard and NumberGuard are the never-block lists: a protected source or number is
	// never denied. A nil IPGuard protects nothing; a nil NumberGuard still protects
	// emergency and short numbers (feed.NewNumberGuard(nil)).
	IPGuard     *feed.IPGuard
	NumberGuard *feed.NumberGuard
	// Deny is the status of a refusal: 403 (the default) or 404. DenyURI, when set, makes a
	// refusal a 302 to this URI instead (an IVR that tells the caller why).
	Deny    int
	DenyURI string
	// Hit, when set, is told of every refusal (a hit on the SIP path: internal/hits). It
	// must not block.
	Hit func(hits.Hit)
	// CallerHeader names the header holding the caller's IP address (DefaultCallerHeader).
	CallerHeader string
	// FailClosed refuses calls when the store cannot answer; the default lets them through.
	FailClosed bool
	// LookupTimeout bounds the store lookups of one decision (DefaultLookupTimeout).
	LookupTimeout time.Duration
	// MaxConns, MaxMessage, IdleTimeout and MessageTimeout bound TCP: open connections, the
	// size of one message (UDP too), how long a connection may sit idle, and how long one
	// message may take to arrive once it has begun.
	MaxConns       int
	MaxConnsPerIP  int // TCP connections one address may hold (DefaultMaxConnsPerIP)
	MaxMessage     int
	IdleTimeout    time.Duration
	MessageTimeout time.Duration
	// ReadBuffer is the UDP socket receive buffer (DefaultReadBuffer). Readers is how many
	// goroutines read UDP (default 2×GOMAXPROCS, at least 4: a reader waits on lookups).
	ReadBuffer int
	Readers    int
	Log        *slog.Logger
}

// ParseDeny reads the --policy-deny value: "403", "404", or a sip:, sips: or tel: URI to
// redirect refused calls to.
func ParseDeny(s string) (code int, uri string, err error) {
	s = strings.TrimSpace(s)
	switch s {
	case "", "403":
		return 403, "", nil
	case "404":
		return 404, "", nil
	}
	if err := checkDenyURI(s); err != nil {
		return 0, "", err
	}
	return 0, s, nil
}

func checkDenyURI(s string) error {
	if !hasSchemePrefix([]byte(s)) {
		return fmt.Errorf("policy deny %q: give 403, 404, or a sip:, sips: or tel: URI to redirect refused calls to", s)
	}
	if !uriChars([]byte(s)) {
		return fmt.Errorf("policy deny URI %q: it may hold no spaces, control characters, quotes or angle brackets (write the bare URI)", s)
	}
	// Something a proxy can send the call to: a host for sip:/sips:, a number for tel:.
	_, rest, _ := strings.Cut(s, ":")
	if hasPrefixFold([]byte(s), "tel:") {
		if !strings.ContainsAny(rest, "0123456789") {
			return fmt.Errorf("policy deny URI %q: a tel: URI needs a number (e.g. tel:+4930123456)", s)
		}
		return nil
	}
	if _, host, ok := strings.Cut(rest, "@"); ok {
		rest = host
	}
	if host, _, _ := strings.Cut(rest, ";"); strings.Trim(host, ":[]") == "" {
		return fmt.Errorf("policy deny URI %q: give the IVR's host, e.g. sip:fraud-ivr@10.0.0.5:5080", s)
	}
	return nil
}

// allowed reports whether src may ask.
func (a *Agent) allowed(src netip.Addr) bool {
	if len(a.cfg.Allow) == 0 {
		return true
	}
	src = src.Unmap()
	for _, p := range a.cfg.Allow {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// Agent is the policy agent. Its lifecycle is New (no side effects), Start, Close; Close is
// safe after a failed Start.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	warn *ratelog.Logger
	st   stats
	// denyURI is cfg.DenyURI, kept as bytes for the Contact of every refusal.
	denyURI []byte

	mu     sync.Mutex
	udp    *net.UDPConn
	tcp    *net.TCPListener
	conns  map[net.Conn]struct{}
	perIP  map[netip.Addr]int // open TCP connections by source address
	closed bool

	wg sync.WaitGroup
}

// New checks cfg and fills in its defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Lookups == nil {
		return nil, errors.New("policy agent needs a store to look numbers and addresses up in")
	}
	if cfg.Addr == "" {
		return nil, errors.New("policy agent needs a listen address (--policy-addr, e.g. 127.0.0.1:5070)")
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("policy address %q: %w (write host:port, e.g. 127.0.0.1:5070)", cfg.Addr, err)
	}
	if cfg.DenyURI != "" {
		if err := checkDenyURI(cfg.DenyURI); err != nil {
			return nil, err
		}
	} else {
		switch cfg.Deny {
		case 0:
			cfg.Deny = 403
		case 403, 404:
		default:
			return nil, fmt.Errorf("policy deny status %d: use 403, 404, or a sip: URI for an IVR", cfg.Deny)
		}
	}
	if cfg.CallerHeader == "" {
		cfg.CallerHeader = DefaultCallerHeader
	}
	if !isToken([]byte(cfg.CallerHeader)) || len(cfg.CallerHeader) > 64 {
		return nil, fmt.Errorf("policy caller header %q is not a SIP header name (letters, digits, '-'; e.g. %s)", cfg.CallerHeader, DefaultCallerHeader)
	}
	switch strings.ToLower(cfg.CallerHeader) {
	case "via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m", "route", "record-route":
		return nil, fmt.Errorf("policy caller header %q is a header SIP itself uses: name one of your own, e.g. %s", cfg.CallerHeader, DefaultCallerHeader)
	}
	if cfg.MinCount < 0 {
		return nil, fmt.Errorf("policy minimum count %d: give 1 or more", cfg.MinCount)
	}
	if cfg.MinCount == 0 {
		cfg.MinCount = 1
	}
	if cfg.NumberGuard == nil {
		cfg.NumberGuard, _ = feed.NewNumberGuard(nil)
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = min(DefaultMaxConnsPerIP, cfg.MaxConns)
	}
	if cfg.TrustedHops <= 0 {
		cfg.TrustedHops = 1
	}
	if cfg.TrustedHops > maxTrustedHops {
		return nil, fmt.Errorf("policy trusted hops %d: at most %d proxies can stand between a caller and the agent", cfg.TrustedHops, maxTrustedHops)
	}
	for i, p := range cfg.Allow {
		cfg.Allow[i] = p.Masked()
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = DefaultMaxMessage
	}
	if cfg.MaxMessage < 1024 {
		return nil, fmt.Errorf("policy maximum message size %d is too small for an INVITE: give at least 1024 bytes", cfg.MaxMessage)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MessageTimeout <= 0 {
		cfg.MessageTimeout = DefaultMessageTimeout
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	if cfg.Readers <= 0 {
		cfg.Readers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: cfg.Log, warn: ratelog.New(cfg.Log, 10*time.Second), conns: map[net.Conn]struct{}{},
		perIP: map[netip.Addr]int{}}
	if cfg.DenyURI != "" {
		a.denyURI = []byte(cfg.DenyURI)
	}
	return a, nil
}

// Start binds UDP and TCP on one port, then serves in the background.
func (a *Agent) Start(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return errors.New("policy agent already closed")
	}
	if a.udp != nil {
		return errors.New("policy agent already started")
	}
	if p, ok := a.cfg.Lookups.(interface{ PrepareLookups() }); ok {
		p.PrepareLookups()
	}
	host, port, _ := net.SplitHostPort(a.cfg.Addr)
	var lc net.ListenConfig
	// With port 0, TCP takes the port UDP was given, which another socket may hold on TCP:
	// then both try again.
	for try := 1; ; try++ {
		udp, err := listenUDP(ctx, a.cfg.Addr, a.cfg.ReadBuffer, a.log)
		if err != nil {
			return err
		}
		tcpAddr := a.cfg.Addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port))
		}
		ln, err := lc.Listen(ctx, "tcp"+family(tcpAddr), tcpAddr)
		if err == nil {
			a.udp, a.tcp = udp, ln.(*net.TCPListener)
			break
		}
		udp.Close()
		if port != "0" || try == 10 {
			return fmt.Errorf("policy agent: listen on TCP %s: %w (stop what uses that port or choose another with --policy-addr)", tcpAddr, err)
		}
	}
	for range a.cfg.Readers {
		a.spawn(a.serveUDP)
	}
	a.spawn(a.acceptLoop)
	a.log.Info("policy agent listening", "udp", a.udp.LocalAddr().String(), "tcp", a.tcp.Addr().String(),
		"national", a.cfg.National, "min_count", a.cfg.MinCount, "verified_only", a.cfg.VerifiedOnly,
		"deny", a.denyName(), "fail_closed", a.cfg.FailClosed)
	return nil
}

func (a *Agent) denyName() string {
	if a.cfg.DenyURI != "" {
		return a.cfg.DenyURI
	}
	return strconv.Itoa(a.cfg.Deny)
}

func (a *Agent) spawn(f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		f()
	}()
}

// UDPAddr and TCPAddr return the bound addresses, or nil before Start.
func (a *Agent) UDPAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.udp == nil {
		return nil
	}
	return a.udp.LocalAddr()
}

func (a *Agent) TCPAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tcp == nil {
		return nil
	}
	return a.tcp.Addr()
}

// Close stops the listeners, closes open connections and waits for every goroutine, or
// until ctx ends.
func (a *Agent) Close(ctx context.Context) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	var errs []error
	if a.udp != nil {
		if err := a.udp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if a.tcp != nil {
		if err := a.tcp.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	for c := range a.conns {
		c.Close()
	}
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("policy agent: goroutines still running at shutdown: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

func (a *Agent) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// addrString spells an address as the store keeps source IPs.
func addrString(ip netip.Addr) string { return ip.Unmap().WithZone("").String() }
