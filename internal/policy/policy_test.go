package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/golden"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sighting is what the fixture store is filled with: count events of one IP and number.
type sighting struct {
	ip, number string
	count      int
	verified   bool
}

// knownBad is the store of most tests.
var knownBad = []sighting{
	{"45.134.26.1", "0046812118532", 2, true},
	{"185.53.88.4", "+4990012345", 12, true},
	{"91.92.240.3", "+441632960123", 1, false}, // one unverified sighting
	{"80.94.95.200", "911", 3, true},           // an emergency number is never denied
	{"10.9.9.9", "0046812118599", 1, true},     // a private source (the guard protects 10/8)
	{"127.0.0.66", "0046812118598", 2, true},   // the loopback alias of the Kamailio test
}

// newStore returns a real SQLite store holding the sightings.
func newStore(t testing.TB, sightings []sighting) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var batch []*event.Event
	now := time.Now().Add(-time.Hour)
	for _, g := range sightings {
		for range g.count {
			src := netip.AddrPortFrom(netip.MustParseAddr(g.ip), 5060)
			e := event.New(event.Origin{AppVersion: "test", NodeID: "n", Method: event.Responsive,
				Transport: event.UDP, Source: src, Dest: netip.MustParseAddrPort("198.51.100.1:5060"), Verified: g.verified},
				now, g.number, "INVITE", "friendly-scanner", []byte("INVITE sip:"+g.number+"@198.51.100.1 SIP/2.0\r\n\r\n"))
			batch = append(batch, e)
		}
	}
	if err := s.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return s
}

// failing wraps Lookups and fails every lookup while fail is set, as a store that is down.
type failing struct {
	Lookups
	fail atomic.Bool
}

var errDown = errors.New("database is locked")

func (f *failing) IP(ctx context.Context, ip string) (store.Aggregate, bool, error) {
	if f.fail.Load() {
		return store.Aggregate{}, false, errDown
	}
	return f.Lookups.IP(ctx, ip)
}

func (f *failing) Number(ctx context.Context, n string) (store.Aggregate, bool, error) {
	if f.fail.Load() {
		return store.Aggregate{}, false, errDown
	}
	return f.Lookups.Number(ctx, n)
}

func (f *failing) MatchNumbers(ctx context.Context, n string) ([]store.Aggregate, error) {
	if f.fail.Load() {
		return nil, errDown
	}
	return f.Lookups.MatchNumbers(ctx, n)
}

func guard(t testing.TB, entries ...string) *feed.IPGuard {
	g, err := feed.NewIPGuard(entries, false)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// startAgent starts an agent on loopback with cfg (Addr and Lookups filled in if empty).
func startAgent(t testing.TB, cfg Config) *Agent {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Lookups == nil {
		cfg.Lookups = newStore(t, knownBad)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return a
}

// client is a UDP socket on loopback talking to one agent.
type client struct {
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newClient(t testing.TB, a *Agent) *client {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{conn: c, to: a.UDPAddr().(*net.UDPAddr)}
}

func (c *client) port() int { return c.conn.LocalAddr().(*net.UDPAddr).Port }

// request renders a request to the agent from this client. extra headers go after CSeq.
func request(method, ruri string, port int, extra ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-pbx-1;rport\r\n", port)
	b.WriteString("Max-Forwards: 69\r\n")
	b.WriteString("From: \"PBX\" <sip:pbx@127.0.0.1>;tag=abc123\r\n")
	fmt.Fprintf(&b, "To: <%s>\r\n", ruri)
	b.WriteString("Call-ID: call-1@127.0.0.1\r\n")
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", method)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// ask sends msg and returns the reply, or "" when none came within wait.
func (c *client) ask(t testing.TB, msg string, wait time.Duration) string {
	t.Helper()
	if _, err := c.conn.WriteToUDP([]byte(msg), c.to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// header returns the first value of a header of a reply.
func header(reply, name string) string {
	it := newHeaderIter([]byte(reply))
	for {
		n, v, ok := it.next()
		if !ok {
			return ""
		}
		if strings.EqualFold(string(n), name) {
			return string(v)
		}
	}
}

func statusOf(reply string) int {
	m := sip.Parse([]byte(reply))
	if m.Kind != sip.Response {
		return 0
	}
	return m.StatusCode
}

// peerSighting stores one verified event as a peer reported it.
func peerSighting(t *testing.T, s *sqlite.Store, ip, number, peer string, trusted bool) {
	t.Helper()
	e := event.New(event.Origin{AppVersion: "test", NodeID: "other-node", Method: event.Responsive, Transport: event.TCP,
		Source: netip.AddrPortFrom(netip.MustParseAddr(ip), 5060), Dest: netip.MustParseAddrPort("198.51.100.1:5060"), Verified: true},
		time.Now().Add(-time.Minute), number, "INVITE", "friendly-scanner", []byte("INVITE sip:"+number+"@198.51.100.1 SIP/2.0\r\n\r\n"))
	e.FromPeer, e.Peer, e.Trusted = true, peer, trusted
	if err := s.Write(context.Background(), []*event.Event{e}); err != nil {
		t.Fatal(err)
	}
}

func TestDecisions(t *testing.T) {
	db := newStore(t, knownBad)
	// What peers reported: an untrusted one names a number and a caller, a trusted one others.
	peerSighting(t, db, "203.0.113.50", "+493012345678", "12D3KooWEvilPeer", false)
	peerSighting(t, db, "203.0.113.51", "+493012345679", "12D3KooWFriend", true)
	const clean = "sip:0046812110000@pbx.example.com;user=phone"
	for _, c := range []struct {
		name     string
		cfg      Config
		ruri     string
		extra    []string
		status   int
		contact  string // want Contact (empty: none)
		decision string
		reason   string // want Reason (empty: none)
	}{
		{name: "clean number", ruri: clean, status: 302, contact: "<" + clean + ">", decision: "allow"},
		{name: "clean tel URI", ruri: "tel:+46-8-1211-0000", status: 302, contact: "<tel:+46-8-1211-0000>", decision: "allow"},
		{name: "bad number", ruri: "sip:0046812118532@pbx.example.com", status: 403, decision: "deny_number",
			reason: `SIP;cause=403;text="dialtrap: number 0046812118532 is known-bad (2 reports)"`},
		{name: "bad number 404", cfg: Config{Deny: 404}, ruri: "sip:0046812118532@pbx.example.com", status: 404, decision: "deny_number",
			reason: `SIP;cause=404;text="dialtrap: number 0046812118532 is known-bad (2 reports)"`},
		{name: "bad number to IVR", cfg: Config{DenyURI: "sip:fraud-ivr@ivr.example.com:5080"}, ruri: "sip:0046812118532@pbx.example.com",
			status: 302, contact: "<sip:fraud-ivr@ivr.example.com:5080>", decision: "deny_number",
			reason: `SIP;cause=403;text="dialtrap: number 0046812118532 is known-bad (2 reports)"`},
		{name: "bad number in tel URI with separators", ruri: "tel:+49-900-12345", status: 403, decision: "deny_number"},
		{name: "international form, exact match only", ruri: "sip:004990012345@pbx", status: 302, decision: "allow"},
		{name: "international form, national match", cfg: Config{National: true}, ruri: "sip:004990012345@pbx", status: 403, decision: "deny_number",
			reason: `SIP;cause=403;text="dialtrap: number 004990012345 matches known-bad +4990012345 (12 reports)"`},
		{name: "trunk form, national match", cfg: Config{National: true}, ruri: "sip:090012345@pbx", status: 403, decision: "deny_number"},
		{name: "trunk form, exact match only", ruri: "sip:090012345@pbx", status: 302, decision: "allow"},
		{name: "outside line and 011, national match", cfg: Config{National: true}, ruri: "sip:9011441632960123@pbx", status: 403, decision: "deny_number"},
		{name: "other country, national match", cfg: Config{National: true}, ruri: "sip:004390012345@pbx", status: 302, decision: "allow"},
		{name: "emergency number", ruri: "sip:911@pbx", status: 302, decision: "allow"},
		{name: "emergency number, national", cfg: Config{National: true}, ruri: "sip:911@pbx", status: 302, decision: "allow"},
		{name: "protected by number guard", cfg: Config{NumberGuard: mustNumberGuard(t, "+4990*")}, ruri: "sip:+4990012345@pbx", status: 302, decision: "allow"},
		{name: "under min count", cfg: Config{MinCount: 3}, ruri: "sip:0046812118532@pbx", status: 302, decision: "allow"},
		{name: "at min count", cfg: Config{MinCount: 12}, ruri: "sip:+4990012345@pbx", status: 403, decision: "deny_number"},
		{name: "unverified counts by default", ruri: "sip:+441632960123@pbx", status: 403, decision: "deny_number",
			reason: `SIP;cause=403;text="dialtrap: number +441632960123 is known-bad (1 report)"`},
		{name: "unverified, verified only", cfg: Config{VerifiedOnly: true}, ruri: "sip:+441632960123@pbx", status: 302, decision: "allow"},
		{name: "bad caller in header", ruri: clean, extra: []string{"X-Dialtrap-Caller: 45.134.26.1"}, status: 403, decision: "deny_source",
			reason: `SIP;cause=403;text="dialtrap: caller 45.134.26.1 is known-bad (2 reports)"`},
		{name: "bad caller in header with port", ruri: clean, extra: []string{"x-dialtrap-caller: 45.134.26.1:5060"}, status: 403, decision: "deny_source"},
		{name: "bad caller in own header", cfg: Config{CallerHeader: "X-Src"}, ruri: clean, extra: []string{"X-Src: 185.53.88.4"}, status: 403, decision: "deny_source"},
		{name: "header not configured is ignored", cfg: Config{CallerHeader: "X-Src"}, ruri: clean, extra: []string{"X-Dialtrap-Caller: 185.53.88.4"}, status: 302, decision: "allow"},
		{name: "clean caller in header", ruri: clean, extra: []string{"X-Dialtrap-Caller: 198.51.100.77"}, status: 302, decision: "allow"},
		{name: "forged clean header before the proxy's", ruri: clean,
			extra: []string{"X-Dialtrap-Caller: 198.51.100.77", "X-Dialtrap-Caller: 45.134.26.1"}, status: 403, decision: "deny_source"},
		{name: "bad caller in bottom Via received", ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP phone.example.com:5060;branch=z9hG4bK-ua;received=185.53.88.4;rport=40000"}, status: 403, decision: "deny_source"},
		{name: "bad caller as the caller's Via host", ruri: clean,
			extra: []string{"Via: SIP/2.0/TCP 185.53.88.4:5060;branch=z9hG4bK-ua"}, status: 403, decision: "deny_source"},
		{name: "bad caller behind two trusted proxies", cfg: Config{TrustedHops: 2}, ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b, SIP/2.0/TCP 185.53.88.4:5060;branch=z9hG4bK-ua"}, status: 403, decision: "deny_source"},
		{name: "a Via below the trusted hops' is the caller's", ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b, SIP/2.0/TCP 185.53.88.4:5060;branch=z9hG4bK-ua"}, status: 302, decision: "allow"},
		{name: "header and Via are both checked", ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP 185.53.88.4:5060;branch=z9hG4bK-ua", "X-Dialtrap-Caller: 198.51.100.77"}, status: 403, decision: "deny_source"},
		{name: "a Via the caller forged below its own does not hide it", ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP 185.53.88.4:5060;branch=z9hG4bK-b", "Via: SIP/2.0/UDP 198.51.100.77:5060;branch=z9hG4bK-ua"}, status: 403, decision: "deny_source"},
		{name: "a received= the caller forged does not hide the proxy's", ruri: clean,
			extra: []string{"Via: SIP/2.0/UDP 198.51.100.77:5060;received=198.51.100.77;branch=z9hG4bK-ua;received=185.53.88.4"}, status: 403, decision: "deny_source"},
		{name: "four forged headers do not push out the proxy's", ruri: clean,
			extra: []string{"X-Dialtrap-Caller: 198.51.100.71", "X-Dialtrap-Caller: 198.51.100.72", "X-Dialtrap-Caller: 198.51.100.73",
				"X-Dialtrap-Caller: 198.51.100.74", "X-Dialtrap-Caller: 45.134.26.1"}, status: 403, decision: "deny_source"},
		{name: "untrusted peer's number does not count", ruri: "sip:+493012345678@pbx", status: 302, decision: "allow"},
		{name: "untrusted peer's caller does not count", ruri: clean, extra: []string{"X-Dialtrap-Caller: 203.0.113.50"}, status: 302, decision: "allow"},
		{name: "untrusted peer's number with source all", cfg: Config{Source: store.SourceAll}, ruri: "sip:+493012345678@pbx", status: 403, decision: "deny_number"},
		{name: "trusted peer's number counts", ruri: "sip:+493012345679@pbx", status: 403, decision: "deny_number"},
		{name: "trusted peer's number, source local", cfg: Config{Source: store.SourceLocal}, ruri: "sip:+493012345679@pbx", status: 302, decision: "allow"},
		{name: "trusted peer's caller counts", ruri: clean, extra: []string{"X-Dialtrap-Caller: 203.0.113.51"}, status: 403, decision: "deny_source"},
		{name: "percent-encoded plus, national", cfg: Config{National: true}, ruri: "sip:%2B4990012345@pbx", status: 403, decision: "deny_number"},
		{name: "percent-encoded digit, national", cfg: Config{National: true}, ruri: "sip:00%34990012345@pbx", status: 403, decision: "deny_number"},
		{name: "percent-encoded digit, exact", ruri: "sip:%2B%34990012345@pbx", status: 403, decision: "deny_number"},
		{name: "dial string with a hash", ruri: "sip:+4990012345%23@pbx", status: 403, decision: "deny_number"},
		{name: "dial string with a slash and a comma", ruri: "sip:+49,900/12345@pbx", status: 403, decision: "deny_number"},
		{name: "tel URI with (0)", ruri: "tel:+49(0)90012345", status: 403, decision: "deny_number"},
		{name: "tel URI with separators and (0)", ruri: "tel:+49-(0)900-12345", status: 403, decision: "deny_number"},
		{name: "a name is not a number", ruri: "sip:alice0046812118532@pbx", status: 302, decision: "allow"},
		{name: "protected caller", cfg: Config{IPGuard: guard(t, "10.0.0.0/8")}, ruri: clean, extra: []string{"X-Dialtrap-Caller: 10.9.9.9"}, status: 302, decision: "allow"},
		{name: "unprotected private caller", ruri: clean, extra: []string{"X-Dialtrap-Caller: 10.9.9.9"}, status: 403, decision: "deny_source"},
		{name: "bad number and bad caller: the number is named", ruri: "sip:0046812118532@pbx", extra: []string{"X-Dialtrap-Caller: 185.53.88.4"}, status: 403, decision: "deny_number"},
		{name: "MESSAGE is decided too", ruri: "sip:0046812118532@pbx", status: 403, decision: "deny_number"},
		{name: "unsupported scheme", ruri: "mailto:0046812118532@pbx", status: 416},
		{name: "R-URI with angle bracket", ruri: "sip:0046812118532@pbx>x", status: 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Lookups = db
			a := startAgent(t, cfg)
			cl := newClient(t, a)
			method := "INVITE"
			if strings.HasPrefix(c.name, "MESSAGE") {
				method = "MESSAGE"
			}
			reply := cl.ask(t, request(method, c.ruri, cl.port(), c.extra...), 2*time.Second)
			if got := statusOf(reply); got != c.status {
				t.Fatalf("status %d, want %d:\n%s", got, c.status, reply)
			}
			if c.decision == "allow" && c.contact == "" {
				c.contact = "<" + c.ruri + ">" // the exact original Request-URI
			}
			if got := header(reply, "Contact"); got != c.contact {
				t.Errorf("Contact %q, want %q", got, c.contact)
			}
			if got := header(reply, "X-Dialtrap-Decision"); got != c.decision {
				t.Errorf("X-Dialtrap-Decision %q, want %q", got, c.decision)
			}
			if c.reason != "" {
				if got := header(reply, "Reason"); got != c.reason {
					t.Errorf("Reason %q, want %q", got, c.reason)
				}
			}
			if strings.HasPrefix(c.decision, "deny") && header(reply, "Reason") == "" {
				t.Errorf("a refusal without Reason:\n%s", reply)
			}
			if c.decision != "" {
				if got := a.Status().Decisions[c.decision]; got != 1 {
					t.Errorf("decisions[%s] = %d, want 1", c.decision, got)
				}
			}
		})
	}
}

func mustNumberGuard(t testing.TB, entries ...string) *feed.NumberGuard {
	g, err := feed.NewNumberGuard(entries)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// The packet's sender is the PBX: a known-bad PBX address never makes its calls refused.
func TestSenderIsNotTheCaller(t *testing.T) {
	a := startAgent(t, Config{Lookups: newStore(t, []sighting{{"127.0.0.1", "0046812110001", 5, true}})})
	cl := newClient(t, a)
	msg := strings.Replace(request("INVITE", "sip:0046812110000@pbx", cl.port()),
		"Via: SIP/2.0/UDP 127.0.0.1:", "Via: SIP/2.0/UDP localhost:", 1)
	reply := cl.ask(t, msg, 2*time.Second)
	if statusOf(reply) != 302 {
		t.Fatalf("want 302 (the sender is not the caller):\n%s", reply)
	}
	// The same request naming 127.0.0.1 as the caller is refused: the store does hold it.
	reply = cl.ask(t, request("INVITE", "sip:0046812110000@pbx", cl.port(), "X-Dialtrap-Caller: 127.0.0.1"), 2*time.Second)
	if statusOf(reply) != 403 {
		t.Fatalf("want 403 for a named bad caller:\n%s", reply)
	}
}

func TestStoreError(t *testing.T) {
	db := newStore(t, knownBad)
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprint("fail closed ", closed), func(t *testing.T) {
			f := &failing{Lookups: db}
			f.fail.Store(true)
			a := startAgent(t, Config{Lookups: f, FailClosed: closed, National: true})
			cl := newClient(t, a)
			const ruri = "sip:0046812110000@pbx"
			reply := cl.ask(t, request("INVITE", ruri, cl.port(), "X-Dialtrap-Caller: 198.51.100.77"), 2*time.Second)
			want, contact := 302, "<"+ruri+">"
			if closed {
				want, contact = 403, ""
			}
			if statusOf(reply) != want || header(reply, "Contact") != contact || header(reply, "X-Dialtrap-Decision") != "error" {
				t.Fatalf("want %d, Contact %q, decision error:\n%s", want, contact, reply)
			}
			if closed && !strings.Contains(header(reply, "Reason"), "lookup failed") {
				t.Errorf("no Reason saying the lookup failed:\n%s", reply)
			}
			// The store is back: the same call is decided again.
			f.fail.Store(false)
			if reply := cl.ask(t, request("INVITE", ruri, cl.port()), 2*time.Second); statusOf(reply) != 302 || header(reply, "X-Dialtrap-Decision") != "allow" {
				t.Fatalf("after recovery:\n%s", reply)
			}
			st := a.Status()
			if st.Decisions["error"] != 1 || st.Decisions["allow"] != 1 {
				t.Errorf("decisions %v", st.Decisions)
			}
		})
	}
	// A known-bad caller is refused even when the number lookup fails.
	f := &failing{Lookups: &numberDown{db}}
	a := startAgent(t, Config{Lookups: f})
	cl := newClient(t, a)
	if reply := cl.ask(t, request("INVITE", "sip:0046812110000@pbx", cl.port(), "X-Dialtrap-Caller: 45.134.26.1"), 2*time.Second); statusOf(reply) != 403 ||
		header(reply, "X-Dialtrap-Decision") != "deny_source" {
		t.Fatalf("want deny_source:\n%s", reply)
	}
}

// numberDown fails number lookups only.
type numberDown struct{ Lookups }

func (numberDown) Number(context.Context, string) (store.Aggregate, bool, error) {
	return store.Aggregate{}, false, errDown
}

// slowLookups never answers until ctx ends: the lookup timeout must decide.
type slowLookups struct{ Lookups }

func (slowLookups) Number(ctx context.Context, _ string) (store.Aggregate, bool, error) {
	<-ctx.Done()
	return store.Aggregate{}, false, ctx.Err()
}

func TestLookupTimeout(t *testing.T) {
	a := startAgent(t, Config{Lookups: slowLookups{newStore(t, nil)}, LookupTimeout: 50 * time.Millisecond})
	cl := newClient(t, a)
	start := time.Now()
	reply := cl.ask(t, request("INVITE", "sip:0046812110000@pbx", cl.port()), 2*time.Second)
	if statusOf(reply) != 302 || header(reply, "X-Dialtrap-Decision") != "error" {
		t.Fatalf("want a fail-open 302:\n%s", reply)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: the lookup timeout did not hold", d)
	}
}

func TestMethods(t *testing.T) {
	a := startAgent(t, Config{})
	cl := newClient(t, a)
	port := cl.port()
	// ACK is absorbed.
	if reply := cl.ask(t, request("ACK", "sip:0046812110000@pbx", port), 300*time.Millisecond); reply != "" {
		t.Fatalf("ACK answered:\n%s", reply)
	}
	for _, c := range []struct {
		method, ruri string
		status       int
		allow        bool
	}{
		{"CANCEL", "sip:0046812110000@pbx", 200, false},
		{"REGISTER", "sip:pbx.example.com", 405, true},
		{"BYE", "sip:0046812110000@pbx", 405, true},
		{"SUBSCRIBE", "sip:0046812110000@pbx", 405, true},
		{"OPTIONS", "sip:127.0.0.1", 200, true}, // a keep-alive ping
		{"OPTIONS", "sip:0046812118532@pbx", 403, false},
		{"OPTIONS", "sip:0046812110000@pbx", 302, false},
	} {
		reply := cl.ask(t, request(c.method, c.ruri, port), 2*time.Second)
		if got := statusOf(reply); got != c.status {
			t.Errorf("%s %s: status %d, want %d:\n%s", c.method, c.ruri, got, c.status, reply)
		}
		if got := header(reply, "Allow"); (got == "INVITE, ACK, CANCEL, OPTIONS, MESSAGE") != c.allow {
			t.Errorf("%s: Allow %q", c.method, got)
		}
	}
	st := a.Status()
	if st.Methods["ACK"] != 1 || st.Methods["CANCEL"] != 1 || st.Methods["other"] != 3 || st.Methods["OPTIONS"] != 3 {
		t.Errorf("methods %v", st.Methods)
	}
}

func TestDropped(t *testing.T) {
	a := startAgent(t, Config{MaxMessage: 2048})
	cl := newClient(t, a)
	for _, msg := range []string{
		"",
		"\x00\x01\x02 garbage",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060\r\n\r\n",                                                // a response
		"INVITE sip:1@x SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:1@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", // no Via
		request("INVITE", "sip:0046812110000@pbx", cl.port(), strings.TrimSuffix(strings.Repeat("Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-x\r\n", 16), "\r\n")),
		request("INVITE", "sip:0046812110000@pbx", cl.port(), "X-Pad: "+strings.Repeat("a", 3000)), // over MaxMessage
	} {
		if reply := cl.ask(t, msg, 200*time.Millisecond); reply != "" {
			t.Errorf("answered %q:\n%s", msg[:min(len(msg), 40)], reply)
		}
	}
	st := a.Status()
	if st.Dropped["unparsable"] != 5 || st.Dropped["responses"] != 1 || st.Dropped["too_large"] != 1 {
		t.Errorf("dropped %v", st.Dropped)
	}
	// The agent still answers.
	if reply := cl.ask(t, request("INVITE", "sip:0046812110000@pbx", cl.port()), 2*time.Second); statusOf(reply) != 302 {
		t.Fatalf("no answer after garbage:\n%s", reply)
	}
}

// Replies echo what they must, and a retransmission gets the very same bytes.
func TestReplyGolden(t *testing.T) {
	db := newStore(t, knownBad)
	for _, c := range []struct {
		name string
		cfg  Config
		msg  string
	}{
		{"allow", Config{}, request("INVITE", "sip:0046812110000@pbx.example.com;user=phone", 5062)},
		{"deny-number", Config{National: true}, request("INVITE", "sip:004990012345@pbx.example.com", 5062)},
		{"deny-source-ivr", Config{DenyURI: "sip:ivr@ivr.example.com", TrustedHops: 2}, request("INVITE", "sip:0046812110000@pbx.example.com", 5062,
			`Via: SIP/2.0/TLS 198.51.100.9:5061;branch=z9hG4bK-ua, SIP/2.0/UDP [2001:db8::1]:5060;received=185.53.88.4;branch=z9hG4bK-ua2`)},
		{"to-tag-kept", Config{}, strings.Replace(request("INVITE", "sip:0046812110000@pbx.example.com", 5062), "To: <sip:0046812110000@pbx.example.com>", "To: <sip:0046812110000@pbx.example.com>;tag=have", 1)},
		{"no-rport", Config{}, strings.Replace(request("CANCEL", "sip:0046812110000@pbx.example.com", 5062), ";rport", ";received=192.0.2.1", 1)},
		{"folded-and-cr", Config{}, strings.Replace(request("INVITE", "sip:0046812110000@pbx.example.com", 5062), "Call-ID: call-1@127.0.0.1", "Call-ID: call-1\rInjected: yes\r\n  @127.0.0.1", 1)},
		{"register", Config{}, request("REGISTER", "sip:pbx.example.com", 5062)},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Lookups, cfg.Addr = db, "127.0.0.1:0"
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			src := netip.MustParseAddrPort("127.0.0.1:40000")
			got, dst := a.handle([]byte(c.msg), src, true, nil)
			again, _ := a.handle([]byte(c.msg), src, true, nil)
			if !bytes.Equal(got, again) {
				t.Errorf("a retransmission got another reply:\n%s\n%s", got, again)
			}
			checkHeaders(t, got)
			golden.Check(t, filepath.Join("testdata", "replies", c.name+".golden"), append([]byte("to "+dst.String()+"\n"), got...))
		})
	}
}

// checkHeaders fails unless b is one status line, header lines of "Name: value" with no
// control characters, and the empty line that ends them.
func checkHeaders(t testing.TB, b []byte) {
	t.Helper()
	if len(b) == 0 {
		return
	}
	head, rest, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok || len(rest) != 0 {
		t.Fatalf("reply does not end with its one empty line: %q", b)
	}
	for i, l := range bytes.Split(head, []byte("\r\n")) {
		for _, c := range l {
			if c < ' ' && c != '\t' || c == 0x7f {
				t.Fatalf("line %d holds control character %#x: %q", i, c, l)
			}
		}
		if i == 0 {
			if !bytes.HasPrefix(l, []byte("SIP/2.0 ")) {
				t.Fatalf("status line %q", l)
			}
			continue
		}
		name, _, ok := bytes.Cut(l, []byte(": "))
		if !ok || !isToken(name) {
			t.Fatalf("header line %q", l)
		}
		if bytes.EqualFold(name, []byte("Reason")) && bytes.Count(l, []byte(`"`)) != 2 {
			t.Fatalf("Reason with stray quotes: %q", l)
		}
	}
}

func TestReasonEscapes(t *testing.T) {
	a, err := New(Config{Lookups: newStore(t, nil), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	// A quote is no URI character: refused before any lookup, never echoed.
	got, _ := a.handle([]byte(request("INVITE", `sip:00468121185"\x@pbx`, 5062)), netip.MustParseAddrPort("127.0.0.1:5062"), true, nil)
	if statusOf(string(got)) != 400 {
		t.Fatalf("want 400:\n%s", got)
	}
	// What the store holds was sent by scanners: the Reason text shows only safe characters.
	v := verdict{outcome: denyNumber, number: "0046812118532", matched: `a"b\c` + "\r\n" + strings.Repeat("9", 40), count: 2}
	text := string(appendReasonText(nil, v, false))
	want := `dialtrap: number 0046812118532 matches known-bad a?b?c??9999999999999999999999999... (2 reports)`
	if text != want {
		t.Fatalf("text %q, want %q", text, want)
	}
}

func TestNewValidates(t *testing.T) {
	db := newStore(t, nil)
	for _, c := range []struct {
		name string
		cfg  Config
		err  string
	}{
		{"no store", Config{Addr: "127.0.0.1:0"}, "store"},
		{"no address", Config{Lookups: db}, "listen address"},
		{"bad address", Config{Lookups: db, Addr: "5070"}, "host:port"},
		{"bad status", Config{Lookups: db, Addr: ":0", Deny: 500}, "403, 404"},
		{"URI scheme", Config{Lookups: db, Addr: ":0", DenyURI: "http://ivr"}, "sip:"},
		{"URI with CRLF", Config{Lookups: db, Addr: ":0", DenyURI: "sip:ivr@x\r\nX-Evil: 1"}, "control"},
		{"URI in brackets", Config{Lookups: db, Addr: ":0", DenyURI: "<sip:ivr@x>"}, "sip:"},
		{"header name", Config{Lookups: db, Addr: ":0", CallerHeader: "X Caller:"}, "header name"},
		{"min count", Config{Lookups: db, Addr: ":0", MinCount: -1}, "minimum"},
		{"Via as caller header", Config{Lookups: db, Addr: ":0", CallerHeader: "Via"}, "SIP itself uses"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(c.cfg)
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("err %v, want one saying %q", err, c.err)
			}
		})
	}
	for _, c := range []struct {
		in   string
		code int
		uri  string
		ok   bool
	}{
		{"", 403, "", true}, {"403", 403, "", true}, {"404", 404, "", true},
		{"sip:ivr@10.0.0.5:5080", 0, "sip:ivr@10.0.0.5:5080", true}, {"tel:+4930123", 0, "tel:+4930123", true},
		{"sips:[2001:db8::5]:5061", 0, "sips:[2001:db8::5]:5061", true}, {"sip:ivr.example.com;transport=tcp", 0, "sip:ivr.example.com;transport=tcp", true},
		{"500", 0, "", false}, {"ivr", 0, "", false}, {"sip:a b", 0, "", false},
		{"sip:", 0, "", false}, {"sip:ivr@", 0, "", false}, {"sips:;transport=tls", 0, "", false}, {"tel:", 0, "", false}, {"tel:+", 0, "", false},
	} {
		code, uri, err := ParseDeny(c.in)
		if (err == nil) != c.ok || code != c.code || uri != c.uri {
			t.Errorf("ParseDeny(%q) = %d, %q, %v", c.in, code, uri, err)
		}
	}
}

func TestLatencyWindow(t *testing.T) {
	var w window
	now := time.Unix(1_800_000_000, 0)
	for i := range 1000 {
		d := 100 * time.Microsecond
		if i%100 == 99 {
			d = 5 * time.Millisecond
		}
		w.recordAt(now, d)
	}
	l := w.summary(now)
	if l.Decisions != 1000 || l.P50Micros < 100 || l.P50Micros > 125 || l.P99Micros < 100 || l.P99Micros > 125 || l.MaxMicros != 5000 {
		t.Errorf("summary %+v", l)
	}
	w.recordAt(now, 5*time.Millisecond) // the 11th of a thousand: p99 is the slow one
	for range 10 {
		w.recordAt(now, 5*time.Millisecond)
	}
	if l := w.summary(now); l.P99Micros < 5000 || l.P99Micros > 6250 {
		t.Errorf("p99 %v, want about 5000", l.P99Micros)
	}
	// A minute later the window has moved past all of it.
	if l := w.summary(now.Add(time.Minute)); l.Decisions != 0 {
		t.Errorf("old decisions still counted: %+v", l)
	}
	for _, ns := range []int64{0, 255, 256, 1000, 1 << 20, 1<<20 + 1, 1 << 40} {
		b := bucketOf(ns)
		if b < 0 || b >= nBuckets || (ns >= 256 && ns < 1<<34 && bucketTop(b) < ns) {
			t.Errorf("bucketOf(%d) = %d (top %d)", ns, b, bucketTop(b))
		}
	}
}
