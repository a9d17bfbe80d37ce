package policy

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// memLookups is an in-memory store for the fuzz targets (a real store is too slow for them).
type memLookups struct{ ips, numbers map[string]int64 }

func (m memLookups) IP(_ context.Context, ip string) (store.Aggregate, bool, error) {
	n, ok := m.ips[ip]
	return store.Aggregate{Key: ip, Count: n, Verified: n}, ok, nil
}

func (m memLookups) Number(_ context.Context, s string) (store.Aggregate, bool, error) {
	n, ok := m.numbers[s]
	return store.Aggregate{Key: s, Count: n, Verified: n}, ok, nil
}

func (m memLookups) MatchNumbers(_ context.Context, s string) ([]store.Aggregate, error) {
	var out []store.Aggregate
	for k, n := range m.numbers {
		if event.NumbersMatch(s, k) {
			out = append(out, store.Aggregate{Key: k, Count: n, Verified: n})
		}
	}
	return out, nil
}

var mem = memLookups{
	ips:     map[string]int64{"45.134.26.1": 2, "2001:db8::66": 1},
	numbers: map[string]int64{"0046812118532": 2, "+4990012345": 12, `0046"\x`: 1},
}

func seedMessages(f *testing.F) {
	f.Add([]byte(request("INVITE", "sip:0046812110000@pbx", 5060)))
	f.Add([]byte(request("INVITE", "sip:004990012345@pbx", 5060, "X-Dialtrap-Caller: 45.134.26.1")))
	f.Add([]byte(request("OPTIONS", "sip:pbx", 5060)))
	f.Add([]byte(request("CANCEL", "tel:+49-900-12345", 5060)))
	f.Add([]byte(tcpRequest("sip:0046812118532@pbx", sdp)))
	f.Add([]byte(request("INVITE", "sip:1@x", 5060, "Via: SIP/2.0/UDP [2001:db8::66]:5060;received=\"a,b\";branch=x, SIP/2.0/UDP h;rport")))
	f.Add([]byte("INVITE sip:1@x SIP/2.0\r\nv: SIP/2.0/UDP 1.2.3.4\r\nf: a\r\nt: b\r\ni: c\r\nCSeq: 1 INVITE\r\nl: 5\r\n\r\nhello"))
	f.Add([]byte("INVITE sip:1@x SIP/2.0\nVia: SIP/2.0/UDP 1.2.3.4;rport\nFrom: a\n\tb\rc\nTo: b\nCall-ID: c\x00\nCSeq: 1 INVITE\n\n"))
}

// FuzzHandle: whatever arrives, the agent does not panic, and a reply is a status line and
// headers with no control characters from the input, ended by one empty line.
func FuzzHandle(f *testing.F) {
	seedMessages(f)
	agents := make([]*Agent, 0, 2)
	for _, cfg := range []Config{{National: true}, {DenyURI: "sip:ivr@10.0.0.1", Deny: 404}} {
		cfg.Lookups, cfg.Addr = mem, "127.0.0.1:0"
		a, err := New(cfg)
		if err != nil {
			f.Fatal(err)
		}
		agents = append(agents, a)
	}
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, a := range agents {
			for _, udp := range []bool{true, false} {
				reply, dst := a.handle(b, src, udp, nil)
				if reply == nil {
					continue
				}
				checkHeaders(t, reply)
				if dst.Addr() != src.Addr() {
					t.Fatalf("reply to %v, not to the sender %v", dst, src)
				}
			}
		}
	})
}

// FuzzFrame: frame never reads past its input or the limit, and finds a message that a
// well-formed one follows without swallowing it.
func FuzzFrame(f *testing.F) {
	seedMessages(f)
	f.Add([]byte("INVITE sip:1@x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n"))
	f.Add([]byte("INVITE sip:1@x SIP/2.0\r\nContent-Length: 1x\r\n\r\n"))
	next := []byte(request("INVITE", "sip:0046812110000@pbx", 5060))
	f.Fuzz(func(t *testing.T, b []byte) {
		const limit = 4096
		n, err := frame(b, limit)
		if n < 0 || n > len(b) || n > limit || (err != nil && n != 0) {
			t.Fatalf("frame = %d, %v for %d bytes", n, err, len(b))
		}
		if n == 0 || err != nil {
			return
		}
		// The same message with another after it frames the same.
		joined := append(append([]byte{}, b[:n]...), next...)
		m, err := frame(joined, limit)
		if err != nil || m != n {
			t.Fatalf("with a message after it: %d, %v, want %d", m, err, n)
		}
		if k, err := frame(joined[n:], limit); err != nil || k != len(next) {
			t.Fatalf("the next message frames as %d, %v", k, err)
		}
	})
}

// FuzzCaller: reading addresses out of caller headers and Via values never panics, and what
// it returns is a valid address, unmapped, with no zone.
func FuzzCaller(f *testing.F) {
	for _, s := range []string{
		"45.134.26.1", "[2001:db8::1]:5060", "1.2.3.4:5", "::ffff:1.2.3.4", "fe80::1%eth0", "",
		"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-b, SIP/2.0/TCP 185.53.88.4:5060;branch=z9hG4bK-ua",
		"SIP/2.0/UDP phone.example.com;received=185.53.88.4;rport=4",
		`SIP/2.0/UDP [::1]:5060;x="a,b;c";received=[2001:db8::2]`, "SIP/2.0/UDP [::1", ";;;=;",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		check := func(ip netip.Addr, ok bool) {
			if ok && (!ip.IsValid() || ip.Zone() != "" || ip.Is4In6()) {
				t.Fatalf("%q gave %v", s, ip)
			}
		}
		check(parseIP(b))
		first, last := splitVias(b)
		if len(first) > len(b) || len(last) > len(b) {
			t.Fatal("split grew")
		}
		for _, ip := range viaAddrs(nil, last) {
			check(ip, true)
		}
		if len(viaAddrs(nil, first)) > maxViaAddrs {
			t.Fatalf("viaAddrs(%q) returned more than %d", first, maxViaAddrs)
		}
		for k := range 3 {
			if v, ok := nthVia([][]byte{b, b}, k); ok && !bytes.Contains(b, v) {
				t.Fatalf("nthVia(%q, %d) = %q, not a part of it", s, k, v)
			}
		}
		v := parseVia(first)
		if v.port < 0 || v.port > 65535 || !bytes.HasSuffix(first, v.params) {
			t.Fatalf("parseVia(%q) = %+v", first, v)
		}
		_, _ = v.param("received")
		// What the Reason header echoes of a dialled string is always safe in a quoted
		// string, escapes decoded or not; a number is digits after an optional '+'.
		d := dialled(b)
		if safe := string(appendSafe(nil, d)); strings.ContainsAny(safe, "\r\n\"\\") {
			t.Fatalf("dialled(%q) = %q echoes as %q", s, d, safe)
		}
		if event.ValidNumber(d) != (strings.Trim(d, "+0123456789") == "" && strings.Trim(d, "+") != "" && strings.LastIndexByte(d, '+') <= 0) {
			t.Fatalf("dialled(%q) = %q: neither a number nor a name", s, d)
		}
	})
}
