package sip

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
)

func TestAuthParam(t *testing.T) {
	tests := []struct{ in, name, want string }{
		{`Digest username="100",realm="asterisk",nonce="abc",uri="sip:x",response="r"`, "nonce", "abc"},
		{`Digest username="100", realm="asterisk", NONCE="abc", response="r"`, "nonce", "abc"},
		{`Digest nonce=abc, username=100`, "nonce", "abc"},
		{`digest nonce = "abc" ,realm=x`, "nonce", "abc"},
		{`Digest nonce=abc`, "realm", ""},
		{`Digest cnonce="c", nonce="n", nc=00000001`, "nonce", "n"},
		{`Digest cnonce="nonce=x"`, "nonce", ""},
		{`Digest uri="sip:a,nonce=evil", nonce="good"`, "nonce", "good"},
		{`Digest username="a\"b", nonce="good"`, "nonce", "good"},
		{`nonce="abc"`, "nonce", "abc"},
		{`Digest nonce="unterminated`, "nonce", "unterminated"},
		{`Digest nonce=`, "nonce", ""},
		{`Digest nonce="`, "nonce", ""},
		{`Digest ="x", nonce="y"`, "nonce", "y"},
		{`"stray, nonce="y"`, "nonce", "y"}, // a stray quote is skipped
		{`Digest`, "nonce", ""},
		{``, "nonce", ""},
		{`, , `, "nonce", ""},
		{`=`, "nonce", ""},
		{`Digest nonce="a\`, "nonce", `a\`},
	}
	for _, tt := range tests {
		if got := AuthParam([]byte(tt.in), tt.name); string(got) != tt.want {
			t.Errorf("AuthParam(%q, %q) = %q, want %q", tt.in, tt.name, got, tt.want)
		}
	}
	if got := AuthParam([]byte(`Digest nonce=""`), "nonce"); got == nil || len(got) != 0 {
		t.Errorf("empty quoted nonce: %q (nil %v), want empty, not nil", got, got == nil)
	}
}

func TestParseAuthorization(t *testing.T) {
	tests := []struct {
		name, in          string
		auth, proxy, want string // want: the nonce found in either
	}{
		{"svcrack", string(readMsg(t, "svcrack-register-auth.sip")), "", "", "6c469132851e4be3d4a75bccc3f1aaab"},
		{"sipsak", string(readMsg(t, "sipsak-register-auth.sip")), "", "", "a4c5d4ad8b42fd964dc9e95df76ae822"},
		{"proxy", "INVITE sip:1@x SIP/2.0\r\nProxy-Authorization: Digest nonce=\"p\"\r\n\r\n", "", `Digest nonce="p"`, "p"},
		{"first only", "REGISTER sip:1@x SIP/2.0\r\nauthorization:Digest nonce=a\r\nAuthorization: Digest nonce=b\r\n\r\n", "Digest nonce=a", "", "a"},
		{"folded", "REGISTER sip:1@x SIP/2.0\r\nAuthorization: Digest username=\"1\",\r\n nonce=\"f\"\r\n\r\n", "Digest username=\"1\",\r\n nonce=\"f\"", "", "f"},
		{"none", string(readMsg(t, "svwar-register.sip")), "", "", ""},
	}
	for _, tt := range tests {
		m := Parse([]byte(tt.in))
		if tt.auth != "" && string(m.Authorization) != tt.auth {
			t.Errorf("%s: Authorization %q, want %q", tt.name, m.Authorization, tt.auth)
		}
		if tt.proxy != "" && string(m.ProxyAuthorization) != tt.proxy {
			t.Errorf("%s: Proxy-Authorization %q, want %q", tt.name, m.ProxyAuthorization, tt.proxy)
		}
		got := AuthParam(m.Authorization, "nonce")
		if got == nil {
			got = AuthParam(m.ProxyAuthorization, "nonce")
		}
		if string(got) != tt.want {
			t.Errorf("%s: nonce %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseAuthorizationAllocs(t *testing.T) {
	b := readMsg(t, "svcrack-register-auth.sip")
	allocs := testing.AllocsPerRun(100, func() {
		m := Parse(b)
		_ = AuthParam(m.Authorization, "nonce")
	})
	if allocs != 0 {
		t.Errorf("Parse and AuthParam allocate %.0f times, want 0", allocs)
	}
}

// Tags and nonces prove one whole address: not its neighbour in the same /64, whatever form
// the address comes in.
func TestTagAndNonceProveOneAddress(t *testing.T) {
	b := newReplyBudget(0, 0)
	now := time.Now()
	a := netip.MustParseAddr("2001:db8::1")
	for _, other := range []string{"2001:db8::2", "2001:db8:0:1::1", "192.0.2.1"} {
		o := netip.MustParseAddr(other)
		if bytes.Equal(b.tag(a), b.tag(o)) {
			t.Errorf("2001:db8::1 and %s share a tag", other)
		}
		if b.nonceValid(o, b.nonce(a, now), now) {
			t.Errorf("the nonce of 2001:db8::1 is valid for %s", other)
		}
	}
	v4, mapped := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.1")
	if !bytes.Equal(b.tag(v4), b.tag(mapped)) || !b.nonceValid(mapped, b.nonce(v4, now), now) {
		t.Error("an IPv4 address and its IPv4-mapped form are not one source")
	}
	if zoned := netip.MustParseAddr("fe80::1%eth0"); !bytes.Equal(b.tag(zoned), b.tag(zoned.WithZone(""))) {
		t.Error("the zone changes the tag")
	}
	if other := newReplyBudget(0, 0); bytes.Equal(other.tag(a), b.tag(a)) || other.nonceValid(a, b.nonce(a, now), now) {
		t.Error("another process's secret accepts this one's tag or nonce")
	}
}

func TestNonceLifetime(t *testing.T) {
	b := newReplyBudget(0, 0)
	src := netip.MustParseAddr("192.0.2.9")
	now := time.Now()
	tests := []struct {
		name   string
		issued time.Time
		nonce  []byte
		ok     bool
	}{
		{"just issued", now, nil, true},
		{"previous bucket", now.Add(-nonceBucket + time.Second), nil, true},
		{"two buckets old", now.Add(-2*nonceBucket - time.Second), nil, false},
		{"11 minutes old", now.Add(-11 * time.Minute), nil, false},
		{"from the future", now.Add(2 * nonceBucket), nil, false},
		{"cut short", now, b.nonce(src, now)[:31], false},
		{"upper case", now, bytes.ToUpper(b.nonce(src, now)), false},
		{"empty", now, []byte{}, false},
	}
	for _, tt := range tests {
		n := tt.nonce
		if n == nil {
			n = b.nonce(src, tt.issued)
		}
		if got := b.nonceValid(src, n, now); got != tt.ok {
			t.Errorf("%s: valid %v, want %v", tt.name, got, tt.ok)
		}
	}
}

// A proven address is remembered for provenFor after its last proof, in a bounded table.
func TestProvenTable(t *testing.T) {
	b := newReplyBudget(0, 0)
	a, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	t0 := time.Now()
	steps := []struct {
		name   string
		addr   netip.Addr
		proved bool
		at     time.Duration
		want   bool
	}{
		{"never proven", a, false, 0, false},
		{"proves itself", a, true, 0, true},
		{"remembered", a, false, 59 * time.Minute, true},
		{"mapped form remembered", netip.AddrFrom16(a.As16()), false, 59 * time.Minute, true},
		{"another address", other, false, 59 * time.Minute, false},
		{"forgotten after an hour", a, false, 61 * time.Minute, false},
		{"proves itself again", a, true, 62 * time.Minute, true},
		{"remembered from the new proof", a, false, 2 * time.Hour, true},
	}
	for _, s := range steps {
		if got := b.verify(s.addr, s.proved, t0.Add(s.at)); got != s.want {
			t.Errorf("%s: verified %v, want %v", s.name, got, s.want)
		}
	}
	if n := b.verifications.Load(); n != 2 {
		t.Errorf("%d verifications counted, want 2", n)
	}
	for i := range maxProven + 1000 {
		b.verify(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), true, t0)
		if len(b.proven) > maxProven {
			t.Fatalf("%d addresses remembered, more than %d", len(b.proven), maxProven)
		}
	}
	if len(b.proven) < maxProven*15/16 {
		t.Errorf("%d addresses remembered when full: forgot too many", len(b.proven))
	}
}

// udpFrom is a UDP socket bound to local (an address of 127/8 or ::1) and connected to the
// harness's SIP port.
func udpFrom(t *testing.T, h *harness, local, server string) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(local)},
		net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(server), uint16(h.srv.UDPAddr().(*net.UDPAddr).Port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg and returns the replies that came within 300 ms of each other.
func exchange(t *testing.T, c net.Conn, msg []byte) [][]byte {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	buf := make([]byte, 8192)
	for {
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func codes(replies [][]byte) []int {
	var out []int
	for _, r := range replies {
		out = append(out, Parse(r).StatusCode)
	}
	return out
}

// headerValue returns the first value of the header name in msg, or nil.
func headerValue(msg []byte, name string) []byte {
	for _, line := range bytes.Split(msg, []byte("\r\n")) {
		if n, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(bytes.TrimSpace(n), []byte(name)) {
			return bytes.TrimSpace(v)
		}
	}
	return nil
}

// sipRequest is a request from the test's scanner; extra headers go before the empty line.
func sipRequest(method, to string, extra ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-v;rport\r\n"+
		"From: <sip:100@127.0.0.1>;tag=s1\r\nTo: %s\r\nCall-ID: verify-1\r\nCSeq: 1 %s\r\nUser-Agent: verify-test\r\n",
		method, to, method)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// Each UDP message is verified or not by what it echoes of our replies to its own address.
func TestUDPSourceVerified(t *testing.T) {
	h := start(t, Config{Responsive: true})
	tag := func(a string) string { return string(h.srv.budget.tag(netip.MustParseAddr(a))) }
	nonce := func(a string, age time.Duration) string {
		return string(h.srv.budget.nonce(netip.MustParseAddr(a), time.Now().Add(-age)))
	}
	to := "<sip:100@127.0.0.1>"
	tests := []struct {
		name, from string
		msg        []byte
		codes      []int
		verified   bool
	}{
		{"no echo", "127.0.0.11", sipRequest("OPTIONS", to), []int{200}, false},
		{"REGISTER is challenged", "127.0.0.11", sipRequest("REGISTER", to), []int{401}, false},
		{"our tag, in an ACK", "127.0.0.12", sipRequest("ACK", to+";tag="+tag("127.0.0.12")), nil, true},
		{"remembered", "127.0.0.12", sipRequest("OPTIONS", to), []int{200}, true},
		{"remembered, garbage too", "127.0.0.12", []byte("\x16\x03\x01junk"), nil, true},
		{"another address's tag", "127.0.0.13", sipRequest("INVITE", to+";tag="+tag("127.0.0.12")), []int{100, 404}, false},
		{"a made-up tag", "127.0.0.13", sipRequest("BYE", to+";tag=0123456789ab"), []int{200}, false},
		{"our nonce", "127.0.0.14", sipRequest("REGISTER", to, `Authorization: Digest username="100", realm="asterisk", nonce="`+nonce("127.0.0.14", 0)+`", response="x"`), []int{200}, true},
		{"our nonce, previous bucket", "127.0.0.15", sipRequest("REGISTER", to, `Authorization: Digest nonce=`+nonce("127.0.0.15", nonceBucket-time.Second)), []int{200}, true},
		{"our nonce, in Proxy-Authorization of an INVITE", "127.0.0.16", sipRequest("INVITE", to, `Proxy-Authorization: Digest nonce="`+nonce("127.0.0.16", 0)+`"`), []int{100, 404}, true},
		{"another address's nonce", "127.0.0.17", sipRequest("REGISTER", to, `Authorization: Digest nonce="`+nonce("127.0.0.14", 0)+`"`), []int{401}, false},
		{"expired nonce", "127.0.0.18", sipRequest("REGISTER", to, `Authorization: Digest nonce="`+nonce("127.0.0.18", 11*time.Minute)+`"`), []int{401}, false},
		{"our nonce as cnonce", "127.0.0.19", sipRequest("REGISTER", to, `Authorization: Digest cnonce="`+nonce("127.0.0.19", 0)+`", nonce="x"`), []int{401}, false},
	}
	for _, tt := range tests {
		c := udpFrom(t, h, tt.from, "127.0.0.1")
		got := codes(exchange(t, c, tt.msg))
		e := h.next(t)
		if e.SourceIP != tt.from || e.SourceVerified != tt.verified {
			t.Errorf("%s: event from %s verified %v, want %s %v", tt.name, e.SourceIP, e.SourceVerified, tt.from, tt.verified)
		}
		if !equalInts(got, tt.codes) {
			t.Errorf("%s: replies %v, want %v", tt.name, got, tt.codes)
		}
	}
	if n := h.srv.Verifications(); n != 4 {
		t.Errorf("%d verifications counted, want 4", n)
	}
}

// What scanners do: INVITE, then ACK for our 404 with its tag; REGISTER, then REGISTER with
// credentials for our challenge. The first message is unverified, the answer verified.
func TestUDPSourceVerifiedByScannerFlows(t *testing.T) {
	h := start(t, Config{Responsive: true})
	for _, local := range []string{"127.0.0.21", "::1"} {
		server := map[bool]string{true: "::1", false: "127.0.0.1"}[strings.Contains(local, ":")]
		c := udpFrom(t, h, local, server)
		replies := exchange(t, c, sipRequest("INVITE", "<sip:100@127.0.0.1>"))
		if !equalInts(codes(replies), []int{100, 404}) {
			t.Fatalf("%s: INVITE got %v", local, codes(replies))
		}
		ourTag := toTag(Parse(replies[1]).To)
		if e := h.next(t); e.SourceVerified {
			t.Errorf("%s: the INVITE is verified", local)
		}
		if r := exchange(t, c, sipRequest("ACK", "<sip:100@127.0.0.1>;tag="+string(ourTag))); len(r) != 0 {
			t.Errorf("%s: ACK answered: %q", local, r)
		}
		if e := h.next(t); e.SIPMethod != "ACK" || !e.SourceVerified {
			t.Errorf("%s: the ACK with our tag %q: %s verified %v", local, ourTag, e.SIPMethod, e.SourceVerified)
		}
	}

	c := udpFrom(t, h, "127.0.0.22", "127.0.0.1")
	replies := exchange(t, c, sipRequest("REGISTER", "<sip:100@127.0.0.1>", "Contact: <sip:100@127.0.0.22:5070>"))
	if len(replies) != 1 || Parse(replies[0]).StatusCode != 401 {
		t.Fatalf("REGISTER got %q", replies)
	}
	if e := h.next(t); e.SourceVerified {
		t.Error("the first REGISTER is verified")
	}
	challenge := headerValue(replies[0], "WWW-Authenticate")
	n := AuthParam(challenge, "nonce")
	if !bytes.HasPrefix(challenge, []byte("Digest ")) || string(AuthParam(challenge, "realm")) != "asterisk" ||
		string(AuthParam(challenge, "algorithm")) != "MD5" || len(n) != 32 {
		t.Fatalf("challenge %q", challenge)
	}
	replies = exchange(t, c, sipRequest("REGISTER", "<sip:100@127.0.0.1>", "Contact: <sip:100@127.0.0.22:5070>",
		`Authorization: Digest username="100",realm="asterisk",nonce="`+string(n)+`",uri="sip:127.0.0.1",response="0123",algorithm=MD5`))
	if len(replies) != 1 || Parse(replies[0]).StatusCode != 200 ||
		!bytes.Contains(replies[0], []byte("\r\nContact: <sip:100@127.0.0.22:5070>;expires=3600\r\n")) ||
		!bytes.Contains(replies[0], []byte("\r\nExpires: 3600\r\n")) {
		t.Fatalf("REGISTER with our nonce got %q", replies)
	}
	if e := h.next(t); !e.SourceVerified {
		t.Error("the REGISTER with our nonce is not verified")
	}
}

// Passive mode sends nothing, so a UDP source never proves itself there, whatever it sends.
func TestPassiveUDPNeverVerified(t *testing.T) {
	h := start(t, Config{})
	a := netip.MustParseAddr("127.0.0.31")
	tag, nonce := h.srv.budget.tag(a), h.srv.budget.nonce(a, time.Now())
	c := udpFrom(t, h, a.String(), "127.0.0.1")
	for _, msg := range [][]byte{
		sipRequest("ACK", "<sip:100@127.0.0.1>;tag="+string(tag)),
		sipRequest("REGISTER", "<sip:100@127.0.0.1>", `Authorization: Digest nonce="`+string(nonce)+`"`),
		sipRequest("OPTIONS", "<sip:100@127.0.0.1>"),
	} {
		if r := exchange(t, c, msg); len(r) != 0 {
			t.Errorf("passive mode replied %q", r)
		}
		if e := h.next(t); e.SourceVerified || e.CollectedMethod != event.Passive {
			t.Errorf("passive %s: verified %v", e.SIPMethod, e.SourceVerified)
		}
	}
	if n := h.srv.Verifications(); n != 0 {
		t.Errorf("%d verifications in passive mode", n)
	}
}

// Over TCP and TLS the handshake proves the source, in either mode; a REGISTER is challenged
// there too, and the nonce works over the stream.
func TestStreamSourcesVerified(t *testing.T) {
	for _, responsive := range []bool{true, false} {
		h := start(t, Config{Responsive: responsive, TLSAddr: "127.0.0.1:0"})
		tc, err := net.Dial("tcp", "127.0.0.1:"+h.port(t))
		if err != nil {
			t.Fatal(err)
		}
		tlsc, err := tls.Dial("tcp", h.srv.TLSAddr().String(), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []net.Conn{tc, tlsc} {
			replies := exchange(t, c, sipRequest("REGISTER", "<sip:100@127.0.0.1>"))
			e := h.next(t)
			if !e.SourceVerified {
				t.Errorf("responsive %v: %s REGISTER not verified", responsive, e.Transport)
			}
			if !responsive {
				if len(replies) != 0 {
					t.Errorf("passive mode replied over %s", e.Transport)
				}
				continue
			}
			if len(replies) != 1 || Parse(replies[0]).StatusCode != 401 {
				t.Fatalf("%s REGISTER got %q", e.Transport, replies)
			}
			n := AuthParam(headerValue(replies[0], "WWW-Authenticate"), "nonce")
			replies = exchange(t, c, sipRequest("REGISTER", "<sip:100@127.0.0.1>", `Authorization: Digest nonce="`+string(n)+`"`))
			if len(replies) != 1 || Parse(replies[0]).StatusCode != 200 {
				t.Errorf("%s REGISTER with our nonce got %q", e.Transport, replies)
			}
			if e := h.next(t); !e.SourceVerified {
				t.Errorf("%s: second REGISTER not verified", e.Transport)
			}
		}
		tc.Close()
		tlsc.Close()
		// Proofs over streams are not counted: only UDP ones are.
		if n := h.srv.Verifications(); n != 0 {
			t.Errorf("%d verifications counted for stream messages", n)
		}
	}
}

// A proof counts for the reply budget too: a source too small to answer within the byte ratio
// is answered once it echoes our nonce (as with our tag, see budget_test.go).
func TestNonceEchoLiftsByteRatio(t *testing.T) {
	h := start(t, Config{Responsive: true, Persona: strings.Repeat("P", 600)})
	small := func(auth string) []byte {
		return []byte("REGISTER sip:1@x SIP/2.0\r\nv:x\r\nf:a\r\nt:<sip:1@x>\r\ni:c\r\nCSeq:1 REGISTER\r\n" + auth + "\r\n")
	}
	c := udpFrom(t, h, "127.0.0.41", "127.0.0.1")
	if r := exchange(t, c, small("")); len(r) != 0 {
		t.Fatalf("a %d-byte probe got %d bytes back", len(small("")), len(r[0]))
	}
	h.next(t)
	nonce := h.srv.budget.nonce(netip.MustParseAddr("127.0.0.41"), time.Now())
	msg := small("Authorization:Digest nonce=" + string(nonce) + "\r\n")
	r := exchange(t, c, msg)
	if len(r) != 1 || len(r[0]) <= AmplificationLimit*(len(msg)+len(small(""))) {
		t.Fatalf("a source that echoed our nonce got %d replies (%v)", len(r), codes(r))
	}
	if e := h.next(t); !e.SourceVerified {
		t.Error("not verified")
	}
}
