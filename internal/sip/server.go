package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/fold"
	"github.com/dialtrap/dialtrap/internal/ratelog"
)

// Config tells a Server where to listen and what to do with what it hears.
type Config struct {
	Addr       string      // UDP and TCP listen address; empty host means IPv4 and IPv6
	TLSAddr    string      // TLS listen address; empty disables TLS
	TLSConfig  *tls.Config // certificate for TLSAddr
	Responsive bool        // answer like a PBX; false: never send anything
	Persona    string      // Server header in responsive mode

	NodeID     string
	AppVersion string

	MaxConns       int           // concurrent TCP/TLS connections
	MaxConnsPerIP  int           // concurrent TCP/TLS connections from one IP
	IdleTimeout    time.Duration // close a stream connection idle this long
	MessageTimeout time.Duration // a stream message must arrive whole within this
	ReadBuffer     int           // UDP socket receive buffer
	// ReplyRate and ReplyBurst bound the replies to one UDP source (an IPv4 address, an IPv6
	// /64) in responsive mode; defaults 20/s and 40. See budget.go.
	ReplyRate  float64
	ReplyBurst int

	Log     *slog.Logger
	Publish func(*event.Event) // called once per received message, unless Fold is set
	// Fold, when set, folds probes alike (internal/fold): a message alike the first of an
	// open group is only counted there (no event is made), and the others' events go to
	// Fold.Open, which passes them on through its own Publish, instead of to Publish.
	Fold *fold.Folder
	// Enrich, when set, adds what the message's shape says (the tool, payloads) to its event
	// before Publish. It runs on the capture path: it must be fast and must not keep m or raw.
	Enrich func(m *Message, raw []byte, e *event.Event)
}

// Server runs the SIP listeners. Its lifecycle is New (no side effects), Start, Close; Close
// is safe after a failed Start.
type Server struct {
	cfg       Config
	responder Responder
	budget    *replyBudget
	log       *slog.Logger

	udp  *net.UDPConn
	tcp  net.Listener
	tls  net.Listener
	wg   sync.WaitGroup
	done chan struct{}

	connMu sync.Mutex
	conns  map[net.Conn]struct{}
	perIP  map[netip.Prefix]int // by source: an IPv4 address, an IPv6 /64
	nconns int
	warn   *ratelog.Logger // one line per kind of failure per 10 s: a flood cannot fill the log

	received    atomic.Uint64
	kernelDrops atomic.Uint64
	// udpHelp wakes a helping UDP reader: signalled when a read fills its batch, so that
	// more may be waiting in the socket (see serveUDP).
	udpHelp chan struct{}
}

// New returns a Server for cfg, with defaults filled in.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	if cfg.MaxConnsPerIP <= 0 {
		cfg.MaxConnsPerIP = 64
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Minute
	}
	if cfg.MessageTimeout <= 0 {
		cfg.MessageTimeout = 10 * time.Second
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 32 << 20
	}
	budget := newReplyBudget(cfg.ReplyRate, cfg.ReplyBurst)
	responder := Responder{Persona: cfg.Persona, TagFor: budget.tag,
		NonceFor: func(a netip.Addr) []byte { return budget.nonce(a, time.Now()) },
		NonceOK:  func(a netip.Addr, n []byte) bool { return budget.nonceValid(a, n, time.Now()) }}
	return &Server{
		cfg:       cfg,
		responder: responder,
		budget:    budget,
		log:       cfg.Log,
		done:      make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
		perIP:     map[netip.Prefix]int{},
		warn:      ratelog.New(cfg.Log, 10*time.Second),
	}
}

// Start binds every listener, then serves in the background. A listener that cannot bind is
// an error naming the address and what to do.
func (s *Server) Start(ctx context.Context) error {
	var lc net.ListenConfig
	// UDP and TCP share one port. With port 0 TCP takes the one UDP was given, which some
	// other socket may hold on TCP: then both try again with another.
	host, port, _ := net.SplitHostPort(s.cfg.Addr)
	for try := 1; ; try++ {
		udp, err := listenUDP(ctx, s.cfg.Addr, s.cfg.ReadBuffer, s.log)
		if err != nil {
			return err
		}
		tcpAddr := s.cfg.Addr
		if port == "0" {
			tcpAddr = net.JoinHostPort(host, fmt.Sprint(udp.LocalAddr().(*net.UDPAddr).Port))
		}
		s.tcp, err = lc.Listen(ctx, "tcp", tcpAddr)
		if err == nil {
			s.udp = udp
			break
		}
		udp.Close()
		if port != "0" || try == 10 {
			return fmt.Errorf("listen for SIP on TCP %s: %w (stop what uses that port or choose another with --sip-addr)", tcpAddr, err)
		}
	}
	if s.cfg.TLSAddr != "" {
		if s.cfg.TLSConfig == nil {
			return errors.New("SIP TLS listener needs a certificate")
		}
		ln, err := lc.Listen(ctx, "tcp", s.cfg.TLSAddr)
		if err != nil {
			return fmt.Errorf("listen for SIP on TLS %s: %w (stop what uses that port, choose another with -z/--sip-tls-addr, or turn TLS off with --sip-tls=false)", s.cfg.TLSAddr, err)
		}
		s.tls = ln
	}
	readers := max(1, runtime.GOMAXPROCS(0))
	s.udpHelp = make(chan struct{}, readers)
	s.spawn(func() { s.serveUDP(false) })
	for range readers - 1 {
		s.spawn(func() { s.serveUDP(true) })
	}
	s.spawn(func() { s.acceptLoop(s.tcp, event.TCP) })
	if s.tls != nil {
		s.spawn(func() { s.acceptLoop(s.tls, event.TLS) })
	}
	return nil
}

// UDPAddr, TCPAddr and TLSAddr return the bound addresses (useful with port 0), or nil for a
// listener that is not running.
func (s *Server) UDPAddr() net.Addr {
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

func (s *Server) TCPAddr() net.Addr {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Addr()
}

func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}
	return s.tls.Addr()
}

// RepliesSuppressed is how many replies the reply budget left out.
func (s *Server) RepliesSuppressed() uint64 { return s.budget.suppressed.Load() }

// Verifications is how many UDP messages proved their source address by echoing our To tag
// or the nonce of our challenge (responsive mode). Messages verified because their address
// proved itself earlier are not counted again.
func (s *Server) Verifications() uint64 { return s.budget.verifications.Load() }

// Received returns how many messages (datagrams or stream messages) were recorded.
func (s *Server) Received() uint64 { return s.received.Load() }

func (s *Server) spawn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops the listeners, closes open connections and waits for every goroutine, so that
// everything received has been published when it returns, or until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	select {
	case <-s.done:
		return nil
	default:
		close(s.done)
	}
	var errs []error
	closeOne := func(err error) {
		if err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	if s.udp != nil {
		closeOne(s.udp.Close())
	}
	if s.tcp != nil {
		closeOne(s.tcp.Close())
	}
	if s.tls != nil {
		closeOne(s.tls.Close())
	}
	s.connMu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.connMu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("SIP listeners still publishing at shutdown: %w", ctx.Err()))
	}
	return errors.Join(errs...)
}

func (s *Server) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// garbageKey is how many first bytes of a message that is not SIP tell it apart for folding.
const garbageKey = 64

// record answers m in responsive mode, then publishes the event. The reply goes first so a
// scanner sees a PBX's timing. The event says whether the source is proven: over TCP and TLS
// always (the handshake completed); over UDP only in responsive mode, when the message or an
// earlier one from that address echoed our tag or nonce (see budget.go). Passive mode sends
// nothing, so a UDP source there is never proven.
func (s *Server) record(m *Message, raw []byte, transport string, src, dst netip.AddrPort, reply func([]byte) error) {
	now := time.Now()
	var p proof
	if s.cfg.Responsive && m.Kind == Request {
		p = s.budget.check(m, src.Addr(), now)
	}
	verified := transport != event.UDP
	if transport == event.UDP && s.cfg.Responsive {
		verified = s.budget.verify(src.Addr(), p.any(), now)
	}
	if s.cfg.Responsive && reply != nil {
		replies := s.responder.replies(m, src, p.nonce)
		if transport == event.UDP && m.Kind == Request {
			// A UDP source may be forged: what it gets back is bounded.
			if allowed := s.budget.admit(src.Addr(), len(raw), verified, replies); len(allowed) < len(replies) {
				s.warn.Info("replies to a source over its reply budget are left out; its probes are still recorded",
					"from", src.Addr(), "suppressed_total", s.budget.suppressed.Load())
				replies = allowed
			}
		}
		for _, r := range replies {
			if err := reply(r); err != nil {
				s.log.Debug("SIP reply not sent", "to", src, "transport", transport, "err", err)
				break
			}
		}
	}
	var probe fold.Probe
	if s.cfg.Fold != nil {
		probe = fold.Probe{Source: src.Addr().Unmap(), Dest: dst.Addr().Unmap(), Transport: transport, Verified: verified,
			Method: m.Method, Number: m.CalledNumber(), Agent: m.Agent()}
		if m.Kind == Garbage {
			// Junk of other content is other evidence (a new exploit's bytes): only
			// datagrams alike in their first bytes fold.
			probe.Content = raw[:min(len(raw), garbageKey)]
		}
		if s.cfg.Fold.Repeat(&probe) {
			s.received.Add(1)
			if s.log.Enabled(context.Background(), slog.LevelDebug) { // its arguments would be boxed for nothing
				s.log.Debug("SIP message alike an earlier one: counted with it", "transport", transport, "from", src, "to", dst, "bytes", len(raw))
			}
			return
		}
	}
	method := event.Passive
	if s.cfg.Responsive {
		method = event.Responsive
	}
	e := event.New(event.Origin{
		AppVersion: s.cfg.AppVersion, NodeID: s.cfg.NodeID, Method: method,
		Transport: transport, Source: src, Dest: dst, Verified: verified,
	}, now, string(m.CalledNumber()), string(m.Method), string(m.Agent()), raw)
	if s.cfg.Enrich != nil {
		s.cfg.Enrich(m, raw, e)
	}
	s.received.Add(1)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("SIP message", "transport", transport, "from", src, "to", dst, "bytes", len(raw),
			"method", e.SIPMethod, "number", e.CalledNumber, "agent", e.SIPUserAgent, "verified", verified,
			"message", e.SIPMessage)
	}
	if s.cfg.Fold != nil {
		s.cfg.Fold.Open(&probe, e)
		return
	}
	s.cfg.Publish(e)
}
