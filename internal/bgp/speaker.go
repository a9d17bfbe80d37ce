// Package bgp is the blackhole speaker: it announces every blocked source address to the
// operator's routers as a /32 or /128 carrying the BLACKHOLE community (RFC 7999, 65535:666)
// and NO_EXPORT, so the routers drop the attacker's traffic at the border. It uses GoBGP as
// a library (no daemon). A Speaker is a firewall.Set: the firewall agent (internal/block)
// feeds it from the nodes' change streams exactly as it feeds an nftables set, whether the
// speaker runs inside a node or as `dialtrap bgp`. Unlike a kernel set, a RIB has no element
// timeouts, so the speaker withdraws each prefix itself when its timeout passes.
package bgp

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/ratelog"
)

// Communities every announcement carries (RFC 7999 and RFC 1997).
const (
	CommunityBlackhole = uint32(bgp.COMMUNITY_BLACKHOLE) // 65535:666
	CommunityNoExport  = uint32(bgp.COMMUNITY_NO_EXPORT) // 65535:65281
)

// Default next hops: addresses routers conventionally route to a discard interface (a
// documentation address for IPv4, the discard-only prefix of RFC 6666 for IPv6).
var (
	DefaultNextHop4 = netip.MustParseAddr("192.0.2.1")
	DefaultNextHop6 = netip.MustParseAddr("100::1")
)

// Neighbor is one router the speaker peers with.
type Neighbor struct {
	Address  netip.Addr
	ASN      uint32
	Port     uint16 // 0: 179
	Password string // TCP MD5 signature (RFC 2385), or ""
	// TTLSecurity is GTSM (RFC 5082): the router must be directly connected and send with
	// TTL 255; packets from farther away are dropped by the kernel.
	TTLSecurity bool
	Multihop    uint8 // eBGP multihop TTL; 0 for a directly connected router
	Passive     bool  // wait for the router to connect
	LocalAddr   netip.Addr
}

// Config is what a Speaker needs.
type Config struct {
	ASN      uint32
	RouterID netip.Addr // an IPv4 address unique among the routers
	// Listen is where the speaker accepts sessions (host:port); "" connects out only.
	Listen    string
	Neighbors []Neighbor
	NextHop4  netip.Addr // default DefaultNextHop4
	NextHop6  netip.Addr // default DefaultNextHop6
	// Communities are added to BLACKHOLE and NO_EXPORT (e.g. a provider's own blackhole
	// community).
	Communities []uint32
	// MaxPrefixes caps what is announced (the routers' max-prefix limit should be above it):
	// beyond it new addresses are refused and counted until some are withdrawn.
	MaxPrefixes int
	// MaxPerIPv6Net caps the /128s announced from one /64 (default 16): one host with a /64
	// of its own could otherwise fill MaxPrefixes with proven addresses and keep every other
	// attacker out. Beyond it an address is refused and counted.
	MaxPerIPv6Net int
	// MaxReceived is how many routes a router may send per address family before the
	// session is closed (default 100): the speaker refuses them all, but a router that sends
	// a full table by mistake would still cost memory.
	MaxReceived int
	// Guard is never announced; SetGuard changes it and withdraws what it now protects.
	Guard *feed.IPGuard
	// ConnectRetry is the wait between connection attempts to a neighbour (default 5 s).
	ConnectRetry time.Duration
	HoldTime     time.Duration // default 90 s
	Log          *slog.Logger
	Now          func() time.Time
}

// ParseCommunity reads "ASN:VALUE" (two 16-bit numbers) or a well-known name.
func ParseCommunity(s string) (uint32, error) {
	switch strings.ToLower(s) {
	case "blackhole":
		return CommunityBlackhole, nil
	case "no-export":
		return CommunityNoExport, nil
	case "no-advertise":
		return uint32(bgp.COMMUNITY_NO_ADVERTISE), nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: give ASN:VALUE with two numbers up to 65535 (e.g. 64512:666)", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// FormatCommunity writes c as ASN:VALUE.
func FormatCommunity(c uint32) string { return fmt.Sprintf("%d:%d", c>>16, c&0xffff) }

// Speaker announces blocked addresses. Its firewall.Set methods are safe for concurrent use.
type Speaker struct {
	cfg   Config
	log   *slog.Logger
	srv   *server.BgpServer
	attr4 []bgp.PathAttributeInterface
	attr6 []bgp.PathAttributeInterface
	warn  *ratelog.Logger

	mu      sync.Mutex
	ensured bool
	// routes holds, for each announced address, when it is withdrawn (unix ms; MaxInt64
	// for never); due orders them by that time (entries refreshed since are skipped).
	routes map[netip.Addr]int64
	due    expiryHeap
	// waiting holds addresses refused at MaxPrefixes (with their withdrawal times): they are
	// announced as room frees up, unless they expire first. At most MaxPrefixes of them.
	waiting     map[netip.Addr]int64
	v4, v6      int
	perNet      map[[8]byte]int // announced /128s by /64
	guard       *feed.IPGuard
	up          map[netip.Addr]bool // neighbours with an established session
	upSince     map[netip.Addr]time.Time
	downSince   map[netip.Addr]time.Time // since the session was lost, or since Start
	lastErr     map[netip.Addr]string    // why the session last went down or was refused
	warned      map[netip.Addr]time.Time // when "no session" was last logged
	started     bool
	closed      bool
	stop        chan struct{}
	cancelWatch context.CancelFunc
	done        chan struct{}
	counters    counters
}

type counters struct {
	announced, withdrawn, expired, unguarded, refusedCap, refusedGuard, refusedNet atomic.Int64
	sessionsUp, sessionsDown                                                       atomic.Int64
}

// New checks cfg; Start begins peering.
func New(cfg Config) (*Speaker, error) {
	if cfg.ASN == 0 {
		return nil, errors.New("--bgp-asn: give this speaker's AS number")
	}
	if !cfg.RouterID.Is4() {
		return nil, errors.New("--bgp-router-id: give an IPv4 address unique among your routers (usually this host's address)")
	}
	if len(cfg.Neighbors) == 0 {
		// Even with --bgp-listen: a router that is not a configured neighbour is refused.
		return nil, errors.New("no BGP neighbour: give at least one --bgp-neighbor (routers that are not neighbours are refused, --bgp-listen or not)")
	}
	if !cfg.NextHop4.IsValid() {
		cfg.NextHop4 = DefaultNextHop4
	}
	if !cfg.NextHop6.IsValid() {
		cfg.NextHop6 = DefaultNextHop6
	}
	if !cfg.NextHop4.Is4() || !cfg.NextHop6.Is6() || cfg.NextHop6.Is4In6() {
		return nil, fmt.Errorf("--bgp-next-hop: need one IPv4 and one IPv6 next hop (have %s, %s)", cfg.NextHop4, cfg.NextHop6)
	}
	if cfg.MaxPrefixes <= 0 {
		cfg.MaxPrefixes = 10000
	}
	if cfg.ConnectRetry <= 0 {
		cfg.ConnectRetry = 5 * time.Second
	}
	if cfg.MaxPerIPv6Net <= 0 {
		cfg.MaxPerIPv6Net = 16
	}
	if cfg.MaxReceived <= 0 {
		cfg.MaxReceived = 100
	}
	if cfg.HoldTime <= 0 {
		cfg.HoldTime = 90 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	seen := map[netip.Addr]bool{}
	for _, n := range cfg.Neighbors {
		if !n.Address.IsValid() || n.ASN == 0 {
			return nil, fmt.Errorf("--bgp-neighbor: each needs an address and an AS number (have %s, AS %d)", n.Address, n.ASN)
		}
		if seen[n.Address] {
			return nil, fmt.Errorf("--bgp-neighbor %s given twice", n.Address)
		}
		seen[n.Address] = true
		if n.TTLSecurity && n.Multihop > 0 {
			return nil, fmt.Errorf("--bgp-neighbor %s: ttl-security and multihop exclude each other", n.Address)
		}
	}
	comms := []uint32{CommunityBlackhole, CommunityNoExport}
	for _, c := range cfg.Communities {
		if !slices.Contains(comms, c) {
			comms = append(comms, c)
		}
	}
	nh4, _ := bgp.NewPathAttributeNextHop(cfg.NextHop4)
	v6, _ := bgp.NewIPAddrPrefix(netip.PrefixFrom(cfg.NextHop6, 128))
	mp6, err := bgp.NewPathAttributeMpReachNLRI(bgp.RF_IPv6_UC, []bgp.PathNLRI{{NLRI: v6}}, cfg.NextHop6)
	if err != nil {
		return nil, fmt.Errorf("--bgp-next-hop %s: %w", cfg.NextHop6, err)
	}
	origin := bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)
	community := bgp.NewPathAttributeCommunities(comms)
	s := &Speaker{
		cfg: cfg, log: cfg.Log, guard: cfg.Guard,
		attr4:  []bgp.PathAttributeInterface{origin, nh4, community},
		attr6:  []bgp.PathAttributeInterface{origin, mp6, community},
		routes: map[netip.Addr]int64{}, up: map[netip.Addr]bool{}, waiting: map[netip.Addr]int64{}, perNet: map[[8]byte]int{},
		upSince: map[netip.Addr]time.Time{}, downSince: map[netip.Addr]time.Time{}, lastErr: map[netip.Addr]string{}, warned: map[netip.Addr]time.Time{},
		warn: ratelog.New(cfg.Log, time.Minute),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	return s, nil
}

// Start starts the BGP server and adds the neighbours; sessions come up in the background.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return errors.New("bgp: Start called twice, or after Close")
	}
	// GoBGP logs at info the one thing an operator needs when a router refuses the speaker,
	// the NOTIFICATION (bad peer AS, say): notes reads it for the status, and passes on only
	// GoBGP's warnings and errors.
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelInfo)
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(&notes{next: s.log.With("component", "gobgp").Handler(), s: s}), lvl))
	go s.srv.Serve()
	global := &api.Global{Asn: s.cfg.ASN, RouterId: s.cfg.RouterID.String(), ListenPort: -1}
	if s.cfg.Listen != "" {
		host, port, err := net.SplitHostPort(s.cfg.Listen)
		p, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || p == 0 {
			s.srv.Stop()
			return fmt.Errorf("--bgp-listen %q: give host:port (e.g. 0.0.0.0:179; port 179 needs CAP_NET_BIND_SERVICE)", s.cfg.Listen)
		}
		global.ListenPort = int32(p)
		if host != "" {
			global.ListenAddresses = []string{host}
		}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("start the BGP speaker: %w", err)
	}
	// The speaker only announces its own routes: whatever a router sends is refused (the
	// import policy applies to local routes too, so they are let through by type), and so
	// is never passed on to another router.
	local := &api.Policy{Name: "dialtrap-local-only", Statements: []*api.Statement{{
		Name:       "accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: local}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("add the BGP import policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies: []*api.Policy{{Name: local.Name}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("set the BGP import policy: %w", err)
	}
	// The watch lives until Close, not as long as the caller's ctx.
	wctx, cancel := context.WithCancel(context.Background())
	s.cancelWatch = cancel
	if err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.peerEvent}, server.WatchPeer()); err != nil {
		cancel()
		s.srv.Stop()
		return fmt.Errorf("watch BGP sessions: %w", err)
	}
	for _, n := range s.cfg.Neighbors {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.peer(n)}); err != nil {
			cancel()
			s.srv.Stop()
			return fmt.Errorf("--bgp-neighbor %s: %w", n.Address, err)
		}
	}
	s.started = true
	for _, n := range s.cfg.Neighbors {
		s.downSince[n.Address] = time.Now()
	}
	go s.expiry()
	return nil
}

func (s *Speaker) peer(n Neighbor) *api.Peer {
	fam := func(afi api.Family_Afi) *api.AfiSafi {
		f := &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}
		return &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true},
			PrefixLimits: &api.PrefixLimit{Family: f, MaxPrefixes: uint32(s.cfg.MaxReceived)}}
	}
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.ASN, AuthPassword: n.Password,
			Description: "dialtrap blackhole"},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: uint64(s.cfg.ConnectRetry / time.Second), HoldTime: uint64(s.cfg.HoldTime / time.Second),
			KeepaliveInterval: uint64(s.cfg.HoldTime / 3 / time.Second), IdleHoldTimeAfterReset: uint64(s.cfg.ConnectRetry / time.Second),
		}},
		Transport: &api.Transport{PassiveMode: n.Passive, RemotePort: uint32(n.Port)},
		AfiSafis:  []*api.AfiSafi{fam(api.Family_AFI_IP), fam(api.Family_AFI_IP6)},
	}
	if n.LocalAddr.IsValid() {
		p.Transport.LocalAddress = n.LocalAddr.String()
	}
	if n.TTLSecurity {
		p.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
	}
	if n.Multihop > 0 {
		p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(n.Multihop)}
	}
	return p
}

func (s *Speaker) peerEvent(e *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if e.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr, as := e.Peer.State.NeighborAddress, e.Peer.State.PeerASN
	up := e.Peer.State.SessionState == bgp.BGP_FSM_ESTABLISHED
	why := e.Peer.State.DisconnectMessage
	if why == "" && e.Peer.State.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		why = strings.ToLower(strings.TrimPrefix(e.Peer.State.DisconnectReason.String(), "DISCONNECT_REASON_"))
	}
	s.mu.Lock()
	was := s.up[addr]
	s.up[addr] = up
	if up {
		s.upSince[addr] = time.Now()
	} else if was {
		s.downSince[addr] = time.Now()
	}
	// Only a fall back to idle is a failure (idle to active, say, is the next try).
	if why != "" && e.Peer.State.SessionState == bgp.BGP_FSM_IDLE {
		s.lastErr[addr] = why
	}
	s.mu.Unlock()
	switch {
	case up && !was:
		s.counters.sessionsUp.Add(1)
		s.log.Info("bgp: session up; announcing the blocked set", "neighbor", addr, "as", as, "announced", s.Announced())
	case !up && was:
		s.counters.sessionsDown.Add(1)
		s.log.Warn("bgp: session down; the router drops the routes this speaker announced until it is back", "neighbor", addr, "as", as,
			"reason", e.Peer.State.DisconnectMessage)
	}
}

// notes is the slog handler GoBGP logs to: it records NOTIFICATIONs sent to and received from
// each neighbour as its last error, and passes warnings and errors on to the speaker's log.
type notes struct {
	next  slog.Handler
	s     *Speaker
	attrs []slog.Attr // from With: GoBGP names the neighbour (Key) in its per-peer logger
}

func (h *notes) Enabled(ctx context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *notes) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "sent notification" || r.Message == "received notification" {
		var key string
		var code, sub int64
		read := func(a slog.Attr) bool {
			switch a.Key {
			case "Key":
				key = a.Value.String()
			case "Code":
				code, _ = strconv.ParseInt(a.Value.String(), 10, 64)
			case "Subcode":
				sub, _ = strconv.ParseInt(a.Value.String(), 10, 64)
			}
			return true
		}
		for _, a := range h.attrs {
			read(a)
		}
		r.Attrs(read)
		if addr, err := netip.ParseAddr(key); err == nil {
			dir := "sent"
			if r.Message == "received notification" {
				dir = "received"
			}
			h.s.mu.Lock()
			h.s.lastErr[addr] = dir + " notification: " + notificationText(code, sub)
			h.s.mu.Unlock()
		}
	}
	if r.Level < slog.LevelWarn || !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *notes) WithAttrs(as []slog.Attr) slog.Handler {
	return &notes{next: h.next.WithAttrs(as), s: h.s, attrs: append(slices.Clip(h.attrs), as...)}
}

func (h *notes) WithGroup(name string) slog.Handler {
	return &notes{next: h.next.WithGroup(name), s: h.s, attrs: h.attrs}
}

// notificationText names a BGP NOTIFICATION's error (RFC 4271 section 4.5, RFC 4486).
func notificationText(code, sub int64) string {
	codes := map[int64]string{1: "message header error", 2: "OPEN message error", 3: "UPDATE message error",
		4: "hold timer expired", 5: "finite state machine error", 6: "cease"}
	subs := map[[2]int64]string{
		{2, 1}: "unsupported version number", {2, 2}: "bad peer AS (check the AS numbers on both sides)",
		{2, 3}: "bad BGP identifier (--bgp-router-id)", {2, 4}: "unsupported optional parameter",
		{2, 6}: "unacceptable hold time", {2, 7}: "unsupported capability",
		{6, 1}: "maximum number of prefixes reached (--bgp-max-received, or the router's limit)", {6, 2}: "administrative shutdown",
		{6, 3}: "peer de-configured", {6, 4}: "administrative reset", {6, 5}: "connection rejected",
		{6, 6}: "other configuration change", {6, 7}: "connection collision resolution", {6, 8}: "out of resources",
	}
	text := codes[code]
	if text == "" {
		text = fmt.Sprintf("error code %d", code)
	}
	if st, ok := subs[[2]int64{code, sub}]; ok {
		return text + ", " + st
	}
	if sub != 0 {
		return fmt.Sprintf("%s, subcode %d", text, sub)
	}
	return text
}

// Announced returns how many prefixes are announced.
func (s *Speaker) Announced() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.routes)
}

func (s *Speaker) path(a netip.Addr, withdraw bool) *apiutil.Path {
	nlri, _ := bgp.NewIPAddrPrefix(netip.PrefixFrom(a, a.BitLen()))
	if a.Is4() {
		return &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri, Attrs: s.attr4, Withdrawal: withdraw}
	}
	return &apiutil.Path{Family: bgp.RF_IPv6_UC, Nlri: nlri, Attrs: s.attr6, Withdrawal: withdraw}
}

// Ensure marks the speaker's RIB as in use (nothing to create).
func (s *Speaker) Ensure(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return firewall.ErrClosed
	}
	if !s.started {
		return errors.New("bgp: Ensure before Start")
	}
	s.ensured = true
	return nil
}

// Check reports ErrMissing until Ensure: a new process starts with an empty RIB, so the
// agent must fetch every node's set whole rather than resume from saved cursors.
func (s *Speaker) Check(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ensured {
		return fmt.Errorf("bgp: a new speaker's RIB is empty: %w", firewall.ErrMissing)
	}
	return nil
}

// Add announces the addresses (a refresh only moves the withdrawal time).
func (s *Speaker) Add(ctx context.Context, els []firewall.Element) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return firewall.ErrClosed
	}
	return s.add(els)
}

// add announces (s.mu held).
func (s *Speaker) add(els []firewall.Element) error {
	now := s.cfg.Now().UnixMilli()
	var paths []*apiutil.Path
	for _, el := range els {
		a := el.Addr.Unmap().WithZone("")
		if !a.IsValid() {
			continue
		}
		if s.guard.Protects(a) {
			s.counters.refusedGuard.Add(1)
			continue
		}
		exp := int64(math.MaxInt64)
		if el.Timeout > 0 {
			exp = now + el.Timeout.Milliseconds()
		}
		if _, ok := s.routes[a]; !ok {
			if a.Is6() && s.perNet[net64(a)] >= s.cfg.MaxPerIPv6Net {
				s.counters.refusedNet.Add(1)
				continue
			}
			if len(s.routes) >= s.cfg.MaxPrefixes {
				s.counters.refusedCap.Add(1)
				if _, ok := s.waiting[a]; ok || len(s.waiting) < s.cfg.MaxPrefixes {
					s.waiting[a] = exp
				}
				s.warn.Warn("bgp: --bgp-max-prefixes reached; new addresses wait until some are withdrawn",
					"max_prefixes", s.cfg.MaxPrefixes, "refused_total", s.counters.refusedCap.Load(), "waiting", len(s.waiting))
				continue
			}
			paths = append(paths, s.path(a, false))
			if a.Is4() {
				s.v4++
			} else {
				s.v6++
				s.perNet[net64(a)]++
			}
		}
		s.routes[a] = exp
		if exp != math.MaxInt64 {
			heap.Push(&s.due, expiry{a, exp})
		}
	}
	if len(paths) == 0 {
		return nil
	}
	if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: paths}); err != nil {
		// Forgotten, so that the next add announces them again.
		for _, p := range paths {
			s.forget(p.Nlri.(*bgp.IPAddrPrefix).Prefix.Addr())
		}
		return fmt.Errorf("announce %d prefixes: %w", len(paths), err)
	}
	s.counters.announced.Add(int64(len(paths)))
	return nil
}

func (s *Speaker) forget(a netip.Addr) {
	if _, ok := s.routes[a]; !ok {
		return
	}
	delete(s.routes, a)
	if a.Is4() {
		s.v4--
		return
	}
	s.v6--
	if k := net64(a); s.perNet[k] <= 1 {
		delete(s.perNet, k)
	} else {
		s.perNet[k]--
	}
}

// net64 is the /64 an IPv6 address is in.
func net64(a netip.Addr) [8]byte {
	b := a.As16()
	return [8]byte(b[:8])
}

// Delete withdraws the addresses; one not announced is not an error.
func (s *Speaker) Delete(ctx context.Context, addrs []netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return firewall.ErrClosed
	}
	return s.withdraw(addrs, &s.counters.withdrawn)
}

// withdraw removes announced addresses (s.mu held).
func (s *Speaker) withdraw(addrs []netip.Addr, counter *atomic.Int64) error {
	var paths []*apiutil.Path
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		delete(s.waiting, a) // withdrawn means not announced later either
		if _, ok := s.routes[a]; !ok {
			continue
		}
		s.forget(a)
		paths = append(paths, s.path(a, true))
	}
	if len(paths) == 0 {
		return nil
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
		return fmt.Errorf("withdraw %d prefixes: %w", len(paths), err)
	}
	counter.Add(int64(len(paths)))
	return s.admitWaiting()
}

// admitWaiting announces waiting addresses while there is room (s.mu held).
func (s *Speaker) admitWaiting() error {
	if len(s.waiting) == 0 || len(s.routes) >= s.cfg.MaxPrefixes {
		return nil
	}
	now := s.cfg.Now().UnixMilli()
	var els []firewall.Element
	for a, exp := range s.waiting {
		if len(s.routes)+len(els) >= s.cfg.MaxPrefixes {
			break
		}
		delete(s.waiting, a)
		if exp <= now {
			continue
		}
		el := firewall.Element{Addr: a}
		if exp != math.MaxInt64 {
			el.Timeout = time.Duration(exp-now) * time.Millisecond
		}
		els = append(els, el)
	}
	return s.add(els)
}

// Len counts the announced prefixes.
func (s *Speaker) Len(ctx context.Context) (v4, v6 int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.v4, s.v6, nil
}

// Remove withdraws everything.
func (s *Speaker) Remove(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || !s.started {
		return nil
	}
	clear(s.waiting) // nothing waits for room in a speaker that is emptied
	all := make([]netip.Addr, 0, len(s.routes))
	for a := range s.routes {
		all = append(all, a)
	}
	return s.withdraw(all, &s.counters.withdrawn)
}

// SetGuard replaces the never-announce list and withdraws what it now protects.
func (s *Speaker) SetGuard(g *feed.IPGuard) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.guard = g
	return s.reguard()
}

// Reguard withdraws announced addresses the guard now protects (after it was reloaded in
// place).
func (s *Speaker) Reguard() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reguard()
}

func (s *Speaker) reguard() error {
	if s.closed || !s.started {
		return nil
	}
	var out []netip.Addr
	for a := range s.routes {
		if s.guard.Protects(a) {
			out = append(out, a)
		}
	}
	for a := range s.waiting {
		if s.guard.Protects(a) {
			delete(s.waiting, a)
		}
	}
	if len(out) > 0 {
		s.log.Info("bgp: withdrawing addresses now on the never-block list", "count", len(out))
	}
	return s.withdraw(out, &s.counters.unguarded)
}

// expiry withdraws prefixes whose timeout passed, once a second.
func (s *Speaker) expiry() {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.expire()
	}
}

// noSessionAfter is how long a neighbour may be without a session before it is logged.
const noSessionAfter = 30 * time.Second

// checkSessions warns, at most every 5 minutes for each, of neighbours without a session for
// noSessionAfter: a router that refuses the speaker (wrong AS, password, address) is
// otherwise silent. Called with s.mu held.
func (s *Speaker) checkSessions(now time.Time) {
	for _, n := range s.cfg.Neighbors {
		a := n.Address
		if s.up[a] || now.Sub(s.downSince[a]) < noSessionAfter || now.Sub(s.warned[a]) < 5*time.Minute {
			continue
		}
		s.warned[a] = now
		why := s.lastErr[a]
		if why == "" {
			why = "no answer (is the router up, and configured with this speaker as a neighbour?)"
		}
		s.log.Warn("bgp: no session with the neighbour; nothing is blackholed there until it comes up",
			"neighbor", a, "as", n.ASN, "for", now.Sub(s.downSince[a]).Round(time.Second), "last_error", why)
	}
}

func (s *Speaker) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.checkSessions(time.Now())
	now := s.cfg.Now().UnixMilli()
	var out []netip.Addr
	for len(s.due) > 0 && s.due[0].at <= now {
		e := heap.Pop(&s.due).(expiry)
		if at, ok := s.routes[e.addr]; ok && at == e.at {
			out = append(out, e.addr)
		}
	}
	// Refreshes leave stale entries behind; rebuild the heap when they outnumber live ones.
	if len(s.due) > 2*len(s.routes)+1024 {
		s.due = s.due[:0]
		for a, at := range s.routes {
			if at != math.MaxInt64 {
				s.due = append(s.due, expiry{a, at})
			}
		}
		heap.Init(&s.due)
	}
	for a, at := range s.waiting {
		if at <= now {
			delete(s.waiting, a)
		}
	}
	if err := s.withdraw(out, &s.counters.expired); err != nil {
		s.warn.Warn("bgp: cannot withdraw expired prefixes", "err", err)
	}
}

// Close stops the speaker: the sessions end with a Cease notification, and the routers
// drop every route the speaker announced.
func (s *Speaker) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	close(s.stop)
	<-s.done
	s.srv.Stop()
	s.cancelWatch()
	return nil
}

// PeerStatus is one neighbour as Status shows it.
type PeerStatus struct {
	Address      string    `json:"address"`
	ASN          uint32    `json:"asn"`
	State        string    `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Since        time.Time `json:"since,omitzero"`
	Received     uint64    `json:"updates_received"`
	Sent         uint64    `json:"updates_sent"`
	LastError    string    `json:"last_error,omitempty"`
	TTLSecurity  bool      `json:"ttl_security,omitempty"`
	Authenticate bool      `json:"md5,omitempty"`
}

// Status is what /bgp shows.
type Status struct {
	ASN            uint32       `json:"asn"`
	RouterID       string       `json:"router_id"`
	NextHops       []string     `json:"next_hops"`
	Communities    []string     `json:"communities"`
	MaxPrefixes    int          `json:"max_prefixes"`
	Announced      int          `json:"announced"`
	AnnouncedIPv4  int          `json:"announced_ipv4"`
	AnnouncedIPv6  int          `json:"announced_ipv6"`
	Announcements  int64        `json:"announcements_total"`
	Withdrawals    int64        `json:"withdrawals_total"` // asked for (Delete, Remove)
	Expired        int64        `json:"expired_total"`
	Allowlisted    int64        `json:"allowlisted_total"` // withdrawn when the never-block list grew
	RefusedMax     int64        `json:"refused_max_prefixes_total"`
	Waiting        int          `json:"waiting"` // refused at the cap, announced when room frees up
	RefusedGuarded int64        `json:"refused_never_block_total"`
	RefusedNet     int64        `json:"refused_ipv6_net_total"` // beyond MaxPerIPv6Net in one /64
	SessionsUp     int64        `json:"sessions_established_total"`
	SessionsDown   int64        `json:"sessions_lost_total"`
	Peers          []PeerStatus `json:"peers"`
}

// Status reports the speaker and its sessions.
func (s *Speaker) Status(ctx context.Context) Status {
	s.mu.Lock()
	st := Status{ASN: s.cfg.ASN, RouterID: s.cfg.RouterID.String(), MaxPrefixes: s.cfg.MaxPrefixes,
		NextHops:  []string{s.cfg.NextHop4.String(), s.cfg.NextHop6.String()},
		Announced: len(s.routes), AnnouncedIPv4: s.v4, AnnouncedIPv6: s.v6, Waiting: len(s.waiting)}
	srv, live := s.srv, s.started && !s.closed
	s.mu.Unlock()
	for _, c := range s.attr4[2].(*bgp.PathAttributeCommunities).Value {
		st.Communities = append(st.Communities, FormatCommunity(c))
	}
	c := &s.counters
	st.Announcements, st.Withdrawals, st.Expired, st.Allowlisted = c.announced.Load(), c.withdrawn.Load(), c.expired.Load(), c.unguarded.Load()
	st.RefusedMax, st.RefusedGuarded, st.SessionsUp, st.SessionsDown = c.refusedCap.Load(), c.refusedGuard.Load(), c.sessionsUp.Load(), c.sessionsDown.Load()
	st.RefusedNet = c.refusedNet.Load()
	st.Peers = []PeerStatus{}
	if !live {
		return st
	}
	srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		ps := PeerStatus{Address: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn(),
			TTLSecurity: p.GetTtlSecurity().GetEnabled(), Authenticate: p.GetConf().GetAuthPassword() != ""}
		if state := p.GetState(); state != nil {
			ps.State = strings.ToLower(strings.TrimPrefix(state.GetSessionState().String(), "SESSION_STATE_"))
			ps.Received = state.GetMessages().GetReceived().GetUpdate()
			ps.Sent = state.GetMessages().GetSent().GetUpdate()
			ps.LastError = state.GetDisconnectMessage()
		}
		if a, err := netip.ParseAddr(ps.Address); err == nil && ps.LastError == "" {
			s.mu.Lock()
			ps.LastError = s.lastErr[a]
			s.mu.Unlock()
		}
		if ts := p.GetTimers().GetState(); ts != nil && ps.State == "established" && ts.GetUptime() != nil {
			ps.Since = ts.GetUptime().AsTime()
		}
		st.Peers = append(st.Peers, ps)
	})
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return strings.Compare(a.Address, b.Address) })
	return st
}

// expiryHeap orders announced addresses by withdrawal time.
type expiry struct {
	addr netip.Addr
	at   int64
}

type expiryHeap []expiry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

var _ firewall.Set = (*Speaker)(nil)
