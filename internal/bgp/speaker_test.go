package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/firewall"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

// Tests run one at a time: GoBGP keeps route selection options in package variables that
// every server writes when it starts (a data race between two servers in one process).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newSpeaker(t *testing.T, cfg Config) *Speaker {
	t.Helper()
	if cfg.ASN == 0 {
		cfg.ASN = 65000
	}
	if !cfg.RouterID.IsValid() {
		cfg.RouterID = netip.MustParseAddr("127.0.0.1")
	}
	cfg.ConnectRetry = time.Second
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func els(timeout time.Duration, addrs ...string) []firewall.Element {
	var out []firewall.Element
	for _, a := range addrs {
		out = append(out, firewall.Element{Addr: netip.MustParseAddr(a), Timeout: timeout})
	}
	return out
}

func keys(m map[string]testutil.Route) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestAnnounceToBird: a real BIRD sees every blocked address as a host route with the
// BLACKHOLE and NO_EXPORT communities and the configured next hops; expiry, allowlisting and
// a session reset behave.
func TestAnnounceToBird(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ibgp   bool
		listen bool // the router connects to the speaker
	}{
		{"ebgp", false, false},
		{"ibgp", true, false},
		{"router connects", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peerASN := uint32(65001)
			if tc.ibgp {
				peerASN = 65000
			}
			o := testutil.BirdOptions{ASN: peerASN, PeerASN: 65000}
			cfg := Config{Communities: []uint32{64512<<16 | 666}, NextHop4: netip.MustParseAddr("192.0.2.66"), NextHop6: netip.MustParseAddr("100::66")}
			if tc.listen {
				o.PeerPort = testutil.FreePort(t, "127.0.0.1")
				cfg.Listen = fmt.Sprintf("127.0.0.1:%d", o.PeerPort)
			}
			b := testutil.StartBird(t, o)
			n := Neighbor{Address: netip.MustParseAddr(b.Addr), ASN: peerASN, Port: uint16(b.Port), Passive: tc.listen}
			cfg.Neighbors = []Neighbor{n}
			s := newSpeaker(t, cfg)
			ctx := context.Background()
			// BIRD waits a few seconds before it connects; the short-lived element below
			// must not expire before the session is up.
			b.WaitFor("the session", 20*time.Second, b.Established)
			if err := s.Add(ctx, els(time.Hour, "198.51.100.7", "203.0.113.9", "45.1.2.3", "2001:db8::5", "2a00:1::1")); err != nil {
				t.Fatal(err)
			}
			// Short-lived, but long enough for a loaded machine to see it announced below.
			if err := s.Add(ctx, els(5*time.Second, "45.9.9.9")); err != nil {
				t.Fatal(err)
			}
			b.WaitFor("6 routes", 15*time.Second, func() bool { return b.Count() == 6 })
			rs := b.Routes()
			want := []string{"198.51.100.7/32", "2001:db8::5/128", "203.0.113.9/32", "2a00:1::1/128", "45.1.2.3/32", "45.9.9.9/32"}
			if got := keys(rs); !slices.Equal(got, want) {
				t.Fatalf("router has %v, want %v", got, want)
			}
			for p, r := range rs {
				for _, c := range []string{"65535:666", "65535:65281", "64512:666"} {
					if !slices.Contains(r.Communities, c) {
						t.Errorf("%s: communities %v lack %s", p, r.Communities, c)
					}
				}
				hop := "192.0.2.66"
				if netip.MustParsePrefix(p).Addr().Is6() {
					hop = "100::66"
				}
				if r.NextHop != hop {
					t.Errorf("%s: next hop %q, want %s", p, r.NextHop, hop)
				}
			}
			// Expiry withdraws.
			b.WaitFor("the expired route withdrawn", 15*time.Second, func() bool { _, ok := b.Routes()["45.9.9.9/32"]; return !ok })
			if st := s.Status(ctx); st.Expired != 1 || st.Announced != 5 {
				t.Fatalf("after expiry: expired %d announced %d, want 1 and 5", st.Expired, st.Announced)
			}
			// Allowlisting withdraws.
			g, err := feed.NewIPGuard([]string{"45.1.2.0/24"}, false)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SetGuard(g); err != nil {
				t.Fatal(err)
			}
			b.WaitFor("the allowlisted route withdrawn", 5*time.Second, func() bool { return b.Count() == 4 })
			if _, ok := b.Routes()["45.1.2.3/32"]; ok {
				t.Fatal("allowlisted 45.1.2.3 still announced")
			}
			s.Add(ctx, els(time.Hour, "45.1.2.4"))
			if st := s.Status(ctx); st.RefusedGuarded != 1 || st.Allowlisted != 1 {
				t.Fatalf("refused_never_block %d allowlisted %d, want 1 and 1", st.RefusedGuarded, st.Allowlisted)
			}
			// A session reset re-announces the whole set.
			b.Run("restart trap")
			b.WaitFor("the session back", 20*time.Second, b.Established)
			b.WaitFor("4 routes after the reset", 10*time.Second, func() bool { return b.Count() == 4 })
			st := s.Status(ctx)
			if len(st.Peers) != 1 || st.Peers[0].State != "established" || st.SessionsUp < 2 || st.SessionsDown < 1 {
				t.Fatalf("status after reset: %+v", st)
			}
			// Delete withdraws at once.
			if err := s.Delete(ctx, []netip.Addr{netip.MustParseAddr("2001:db8::5")}); err != nil {
				t.Fatal(err)
			}
			b.WaitFor("the deleted route withdrawn", 5*time.Second, func() bool { return b.Count() == 3 })
		})
	}
}

// TestMaxPrefixes: beyond --bgp-max-prefixes nothing new is announced; a slot freed by a
// withdrawal is used again.
func TestMaxPrefixes(t *testing.T) {
	b := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	s := newSpeaker(t, Config{MaxPrefixes: 5, Neighbors: []Neighbor{{Address: netip.MustParseAddr(b.Addr), ASN: 65001, Port: uint16(b.Port)}}})
	ctx := context.Background()
	var addrs []string
	for i := range 10 {
		addrs = append(addrs, fmt.Sprintf("45.0.0.%d", i+1))
	}
	if err := s.Add(ctx, els(time.Hour, addrs...)); err != nil {
		t.Fatal(err)
	}
	b.WaitFor("5 routes", 15*time.Second, func() bool { return b.Count() == 5 })
	// A refresh of an announced address is not refused.
	if err := s.Add(ctx, els(2*time.Hour, "45.0.0.1")); err != nil {
		t.Fatal(err)
	}
	st := s.Status(ctx)
	if st.Announced != 5 || st.RefusedMax != 5 || st.Waiting != 5 {
		t.Fatalf("announced %d refused %d waiting %d, want 5, 5, 5", st.Announced, st.RefusedMax, st.Waiting)
	}
	time.Sleep(300 * time.Millisecond)
	if n := b.Count(); n != 5 {
		t.Fatalf("router holds %d routes, want 5", n)
	}
	// A withdrawal frees a slot: a waiting address takes it.
	s.Delete(ctx, []netip.Addr{netip.MustParseAddr("45.0.0.1")})
	b.WaitFor("a waiting address announced", 5*time.Second, func() bool {
		_, gone := b.Routes()["45.0.0.1/32"]
		return !gone && b.Count() == 5
	})
	if st := s.Status(ctx); st.Announced != 5 || st.Waiting != 4 {
		t.Fatalf("after the withdrawal: announced %d waiting %d, want 5 and 4", st.Announced, st.Waiting)
	}
}

// TestMD5AndTTLSecurity: the session comes up with a TCP MD5 password and GTSM on both ends,
// and not with a wrong password.
func TestMD5AndTTLSecurity(t *testing.T) {
	// iBGP: BIRD treats an eBGP session without multihop as a direct link and refuses a
	// next hop off its interfaces, which loopback cannot give it.
	b := testutil.StartBird(t, testutil.BirdOptions{ASN: 65000, PeerASN: 65000, Password: "s3cret", TTLSecurity: true})
	n := Neighbor{Address: netip.MustParseAddr(b.Addr), ASN: 65000, Port: uint16(b.Port), Password: "s3cret", TTLSecurity: true}
	s := newSpeaker(t, Config{Neighbors: []Neighbor{n}})
	s.Add(context.Background(), els(time.Hour, "45.3.3.3"))
	b.WaitFor("the route over an authenticated session", 15*time.Second, func() bool { return b.Count() == 1 })

	b2 := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000, Password: "other"})
	n2 := Neighbor{Address: netip.MustParseAddr(b2.Addr), ASN: 65001, Port: uint16(b2.Port), Password: "s3cret"}
	newSpeaker(t, Config{Neighbors: []Neighbor{n2}})
	// And GTSM is really on: a speaker that sends with the default TTL is not heard.
	b3 := testutil.StartBird(t, testutil.BirdOptions{ASN: 65000, PeerASN: 65000, TTLSecurity: true})
	n3 := Neighbor{Address: netip.MustParseAddr(b3.Addr), ASN: 65000, Port: uint16(b3.Port)}
	newSpeaker(t, Config{Neighbors: []Neighbor{n3}})
	time.Sleep(3 * time.Second)
	if b2.Established() {
		t.Fatal("a session with a wrong MD5 password came up")
	}
	if b3.Established() {
		t.Fatal("a session to a router with TTL security came up from a speaker without it")
	}
}

func TestSpeakerChecks(t *testing.T) {
	rid := netip.MustParseAddr("127.0.0.1")
	nb := []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), ASN: 1}}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no asn", Config{RouterID: rid, Neighbors: nb}},
		{"no router id", Config{ASN: 1, Neighbors: nb}},
		{"ipv6 router id", Config{ASN: 1, RouterID: netip.MustParseAddr("::1"), Neighbors: nb}},
		{"no neighbour", Config{ASN: 1, RouterID: rid}},
		{"v6 next hop as v4", Config{ASN: 1, RouterID: rid, Neighbors: nb, NextHop4: netip.MustParseAddr("::1")}},
		{"neighbour twice", Config{ASN: 1, RouterID: rid, Neighbors: append(nb, nb...)}},
		{"gtsm and multihop", Config{ASN: 1, RouterID: rid, Neighbors: []Neighbor{{Address: rid, ASN: 2, TTLSecurity: true, Multihop: 2}}}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", tc.name, tc.cfg)
		}
	}
	s, err := New(Config{ASN: 1, RouterID: rid, Neighbors: nb})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(context.Background()); !errors.Is(err, firewall.ErrMissing) {
		t.Fatalf("Check of a new speaker: %v, want ErrMissing", err)
	}
	s.Close()
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]uint32{"65535:666": CommunityBlackhole, "blackhole": CommunityBlackhole, "no-export": CommunityNoExport, "64512:1": 64512<<16 | 1, "0:0": 0} {
		got, err := ParseCommunity(in)
		if err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %d, %v; want %d", in, got, err, want)
		}
		if err == nil && in[0] >= '0' && in[0] <= '9' && FormatCommunity(got) != in {
			t.Errorf("FormatCommunity(%d) = %s, want %s", got, FormatCommunity(got), in)
		}
	}
	for _, in := range []string{"", "65536:1", "1:65536", "1", "a:b", "1:2:3", "-1:2"} {
		if _, err := ParseCommunity(in); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", in)
		}
	}
}

// idleNeighbor is a neighbour that never answers: the speaker's RIB works without a session.
func idleNeighbor(t *testing.T) []Neighbor {
	return []Neighbor{{Address: netip.MustParseAddr("127.0.0.2"), ASN: 65001, Port: uint16(testutil.FreePort(t, "127.0.0.2"))}}
}

// One IPv6 /64 cannot fill the cap: beyond MaxPerIPv6Net its addresses are refused, and an
// IPv4 attacker still gets in.
func TestIPv6NetCap(t *testing.T) {
	s := newSpeaker(t, Config{MaxPrefixes: 30, MaxPerIPv6Net: 16, Neighbors: idleNeighbor(t)})
	ctx := context.Background()
	var addrs []string
	for i := range 40 {
		addrs = append(addrs, fmt.Sprintf("2a01:0:0:1::%x", i+1))
	}
	if err := s.Add(ctx, els(time.Hour, append(addrs, "2a01:0:0:2::1", "45.1.1.1")...)); err != nil {
		t.Fatal(err)
	}
	st := s.Status(ctx)
	if st.AnnouncedIPv6 != 17 || st.AnnouncedIPv4 != 1 || st.RefusedNet != 24 || st.Waiting != 0 {
		t.Fatalf("v6 %d v4 %d refused_ipv6_net %d waiting %d; want 17, 1, 24, 0", st.AnnouncedIPv6, st.AnnouncedIPv4, st.RefusedNet, st.Waiting)
	}
	// A withdrawal in the /64 makes room for one more of it.
	s.Delete(ctx, []netip.Addr{netip.MustParseAddr("2a01:0:0:1::1")})
	s.Add(ctx, els(time.Hour, "2a01:0:0:1::99"))
	if st := s.Status(ctx); st.AnnouncedIPv6 != 17 || st.RefusedNet != 24 {
		t.Fatalf("after a withdrawal: v6 %d refused %d; want 17 and 24", st.AnnouncedIPv6, st.RefusedNet)
	}
}

// Delete and Remove also forget waiting addresses: a deleted address is never announced
// later, and an emptied speaker announces nothing.
func TestDeleteForgetsWaiting(t *testing.T) {
	s := newSpeaker(t, Config{MaxPrefixes: 1, Neighbors: idleNeighbor(t)})
	ctx := context.Background()
	s.Add(ctx, els(time.Hour, "45.0.0.1"))
	s.Add(ctx, els(time.Hour, "45.0.0.2")) // waits
	s.Delete(ctx, []netip.Addr{netip.MustParseAddr("45.0.0.2")})
	s.Delete(ctx, []netip.Addr{netip.MustParseAddr("45.0.0.1")})
	if st := s.Status(ctx); st.Announced != 0 || st.Waiting != 0 {
		t.Fatalf("after deleting both: announced %d waiting %d", st.Announced, st.Waiting)
	}
	s.Add(ctx, els(time.Hour, "45.0.0.3"))
	s.Add(ctx, els(time.Hour, "45.0.0.4")) // waits
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(ctx); st.Announced != 0 || st.Waiting != 0 {
		t.Fatalf("after Remove: announced %d waiting %d", st.Announced, st.Waiting)
	}
}

// A router that sends more routes than MaxReceived loses the session (and says why in the
// status): a full table sent by mistake must not fill the node's memory.
func TestReceivedRoutesCapped(t *testing.T) {
	var routes []string
	for i := range 5 {
		routes = append(routes, fmt.Sprintf("198.18.%d.0/24", i))
	}
	b := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000, Export: routes[:2]})
	s := newSpeaker(t, Config{MaxReceived: 3, Neighbors: []Neighbor{{Address: netip.MustParseAddr(b.Addr), ASN: 65001, Port: uint16(b.Port)}}})
	b.WaitFor("the session with a router sending two routes", 20*time.Second, b.Established)
	s.Add(context.Background(), els(time.Hour, "45.2.2.2"))
	b.WaitFor("the route", 10*time.Second, func() bool { return b.Count() == 1 })

	b2 := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000, Export: routes})
	s2 := newSpeaker(t, Config{MaxReceived: 3, Neighbors: []Neighbor{{Address: netip.MustParseAddr(b2.Addr), ASN: 65001, Port: uint16(b2.Port)}}})
	testutil.Eventually(t, "the session closed for too many routes", 20*time.Second, func() bool {
		st := s2.Status(context.Background())
		return st.SessionsUp >= 1 && len(st.Peers) == 1 && st.Peers[0].State != "established"
	})
}

// A router that refuses the session says why in the status (here: the AS number the speaker
// was given is not the router's).
func TestRefusedSessionShowsWhy(t *testing.T) {
	b := testutil.StartBird(t, testutil.BirdOptions{ASN: 65001, PeerASN: 65000})
	logs := &testutil.SyncBuffer{}
	s := newSpeaker(t, Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Neighbors: []Neighbor{{Address: netip.MustParseAddr(b.Addr), ASN: 65002, Port: uint16(b.Port)}}})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("speaker log:\n%s", logs.String())
		}
	})
	var why string
	testutil.Eventually(t, "a last error for the refused session", 45*time.Second, func() bool {
		st := s.Status(context.Background())
		if len(st.Peers) == 1 {
			why = st.Peers[0].LastError
		}
		return why != ""
	})
	if !strings.Contains(why, "bad peer AS") {
		t.Errorf("last error %q does not name the AS mismatch", why)
	}
	t.Logf("last error: %s", why)
}
