package firewall

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newTestNFT makes a namespace and an NFT in it (defaults unless o says otherwise).
func newTestNFT(t *testing.T, o NFTOptions) (*NFT, *netns) {
	t.Helper()
	needTool(t, "nft", "nftables")
	ns := newNetns(t)
	o.NetNS = ns.fd()
	n, err := NewNFT(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n, ns
}

func ensure(t *testing.T, s Set) {
	t.Helper()
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func add(t *testing.T, s Set, els ...Element) {
	t.Helper()
	if err := s.Add(context.Background(), els); err != nil {
		t.Fatal(err)
	}
}

func el(addr string, timeout time.Duration) Element {
	return Element{Addr: netip.MustParseAddr(addr), Timeout: timeout}
}

// nftElem is an element as `nft -j list set` shows it; timeout and expires in seconds,
// timeout 0 for a permanent one.
type nftElem struct {
	timeout, expires int
}

// nftSet lists a set through the real nft inside ns.
func nftSet(t *testing.T, ns *netns, table, set string) map[string]nftElem {
	t.Helper()
	out := ns.run(t, "nft", "-j", "list", "set", "inet", table, set)
	var doc struct {
		Nftables []struct {
			Set *struct {
				Type  string            `json:"type"`
				Flags []string          `json:"flags"`
				Elem  []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v: %.300s", err, out)
	}
	elems := map[string]nftElem{}
	for _, item := range doc.Nftables {
		if item.Set == nil {
			continue
		}
		for _, raw := range item.Set.Elem {
			var plain string
			if json.Unmarshal(raw, &plain) == nil {
				elems[plain] = nftElem{}
				continue
			}
			var timed struct {
				Elem struct {
					Val     string `json:"val"`
					Timeout int    `json:"timeout"`
					Expires int    `json:"expires"`
				} `json:"elem"`
			}
			if err := json.Unmarshal(raw, &timed); err != nil {
				t.Fatalf("element %s: %v", raw, err)
			}
			elems[timed.Elem.Val] = nftElem{timed.Elem.Timeout, timed.Elem.Expires}
		}
	}
	return elems
}

// dropCounters returns the packet counter of each rule of the chain, by the set it looks up.
func dropCounters(t *testing.T, ns *netns, table, chain string) map[string]int {
	t.Helper()
	out := ns.run(t, "nft", "-j", "list", "chain", "inet", table, chain)
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	counters := map[string]int{}
	for _, item := range doc.Nftables {
		raw, ok := item["rule"]
		if !ok {
			continue
		}
		var rule struct {
			Expr []struct {
				Match *struct {
					Right string `json:"right"`
				} `json:"match"`
				Counter *struct {
					Packets int `json:"packets"`
				} `json:"counter"`
			} `json:"expr"`
		}
		if err := json.Unmarshal(raw, &rule); err != nil {
			t.Fatal(err)
		}
		set, packets := "", -1
		for _, e := range rule.Expr {
			if e.Match != nil {
				set = strings.TrimPrefix(e.Match.Right, "@")
			}
			if e.Counter != nil {
				packets = e.Counter.Packets
			}
		}
		counters[set] = packets
	}
	return counters
}

func checkLen(t *testing.T, s Set, want4, want6 int) {
	t.Helper()
	v4, v6, err := s.Len(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v4 != want4 || v6 != want6 {
		t.Fatalf("Len = %d, %d; want %d, %d", v4, v6, want4, want6)
	}
}

func TestNFTEnsure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                     string
		o                        NFTOptions
		table, set4, set6, chain string
	}{
		{"defaults", NFTOptions{}, "dialtrap", "blocklist4", "blocklist6", "input"},
		{"named", NFTOptions{Table: "t", Set4: "four", Set6: "six", Chain: "c"}, "t", "four", "six", "c"},
		{"no chain", NFTOptions{NoChain: true}, "dialtrap", "blocklist4", "blocklist6", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, ns := newTestNFT(t, tc.o)
			ensure(t, n)
			ensure(t, n) // again: nothing changes, nothing doubles

			ruleset := ns.run(t, "nft", "list", "ruleset")
			for _, want := range []string{
				"table inet " + tc.table + " {",
				"set " + tc.set4 + " {\n\t\ttype ipv4_addr\n\t\tflags timeout\n",
				"set " + tc.set6 + " {\n\t\ttype ipv6_addr\n\t\tflags timeout\n",
			} {
				if !strings.Contains(ruleset, want) {
					t.Errorf("ruleset lacks %q:\n%s", want, ruleset)
				}
			}
			if tc.chain == "" {
				if strings.Contains(ruleset, "chain") {
					t.Errorf("NoChain made a chain:\n%s", ruleset)
				}
				return
			}
			for _, want := range []string{
				"chain " + tc.chain + " {\n\t\ttype filter hook input priority filter - 10; policy accept;\n" +
					"\t\tip saddr @" + tc.set4 + " counter packets 0 bytes 0 drop\n" +
					"\t\tip6 saddr @" + tc.set6 + " counter packets 0 bytes 0 drop\n\t}",
			} {
				if !strings.Contains(ruleset, want) {
					t.Errorf("ruleset lacks %q:\n%s", want, ruleset)
				}
			}
		})
	}
}

// An agent restart (a new NFT, Ensure again) keeps the elements and the rules' counters; a
// chain whose rules were changed gets exactly its two rules back.
func TestNFTEnsureKeepsElements(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ensure(t, n)
	add(t, n, el("192.0.2.1", time.Hour), el("2001:db8::1", 0))
	before := ns.run(t, "nft", "-a", "list", "chain", "inet", "dialtrap", "input") // with rule handles
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2, err := NewNFT(NFTOptions{NetNS: ns.fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	ensure(t, n2)
	checkLen(t, n2, 1, 1)
	// The same rules (same handles), so their counters went on.
	if after := ns.run(t, "nft", "-a", "list", "chain", "inet", "dialtrap", "input"); after != before {
		t.Fatalf("Ensure changed the chain:\n%s\nto\n%s", before, after)
	}

	ns.run(t, "nft", "add", "rule", "inet", "dialtrap", "input", "tcp", "dport", "22", "accept")
	ensure(t, n2)
	chain := ns.run(t, "nft", "list", "chain", "inet", "dialtrap", "input")
	if strings.Contains(chain, "dport 22") || strings.Count(chain, "drop") != 2 {
		t.Fatalf("Ensure did not restore the chain:\n%s", chain)
	}
	checkLen(t, n2, 1, 1)
}

func TestNFTAddTimeouts(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ensure(t, n)
	cases := []struct {
		in      Element
		set     string
		val     string
		timeout int // seconds; 0 = permanent
	}{
		{el("192.0.2.1", time.Hour), "blocklist4", "192.0.2.1", 3600},
		{el("192.0.2.2", 0), "blocklist4", "192.0.2.2", 0},
		{el("::ffff:192.0.2.3", 90*time.Second), "blocklist4", "192.0.2.3", 90},
		{el("2001:db8::1", 30*time.Minute), "blocklist6", "2001:db8::1", 1800},
		{el("2001:db8::2", 0), "blocklist6", "2001:db8::2", 0},
		{el("fe80::1%eth0", 7*24*time.Hour), "blocklist6", "fe80::1", 604800},
	}
	var els []Element
	for _, c := range cases {
		els = append(els, c.in)
	}
	add(t, n, els...)
	sets := map[string]map[string]nftElem{
		"blocklist4": nftSet(t, ns, "dialtrap", "blocklist4"),
		"blocklist6": nftSet(t, ns, "dialtrap", "blocklist6"),
	}
	for _, c := range cases {
		got, ok := sets[c.set][c.val]
		if !ok {
			t.Errorf("%v: %s not in %s: %v", c.in.Addr, c.val, c.set, sets[c.set])
			continue
		}
		if got.timeout != c.timeout {
			t.Errorf("%v: timeout %d s, want %d", c.in.Addr, got.timeout, c.timeout)
		}
	}
	checkLen(t, n, 3, 3)

	if err := n.Add(context.Background(), []Element{el("192.0.2.9", -time.Second)}); err == nil {
		t.Error("negative timeout accepted")
	}
	if err := n.Add(context.Background(), []Element{{}}); err == nil {
		t.Error("zero address accepted")
	}
}

// Add sets the new timeout whether or not the element is there: shorter, longer, permanent to
// timed and back, and the same address twice in one call (the last counts).
func TestNFTRefresh(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ensure(t, n)
	for _, c := range []struct {
		addr          string
		first, second time.Duration
		want          int
	}{
		{"192.0.2.10", 100 * time.Second, 2 * time.Second, 2},
		{"192.0.2.11", 10 * time.Second, 1000 * time.Second, 1000},
		{"192.0.2.12", 100 * time.Second, 0, 0},
		{"192.0.2.13", 0, 50 * time.Second, 50},
		{"2001:db8::10", 100 * time.Second, 2 * time.Second, 2},
		{"2001:db8::11", 0, 60 * time.Second, 60},
	} {
		add(t, n, el(c.addr, c.first))
		add(t, n, el(c.addr, c.second))
		set := "blocklist4"
		if strings.Contains(c.addr, ":") {
			set = "blocklist6"
		}
		got, ok := nftSet(t, ns, "dialtrap", set)[c.addr]
		if !ok || got.timeout != c.want {
			t.Errorf("%s: %v then %v: in set %v, timeout %d s; want %d", c.addr, c.first, c.second, ok, got.timeout, c.want)
		}
	}
	add(t, n, el("192.0.2.20", time.Hour), el("192.0.2.20", 30*time.Second))
	if got := nftSet(t, ns, "dialtrap", "blocklist4")["192.0.2.20"]; got.timeout != 30 {
		t.Errorf("duplicate in one call: timeout %d, want 30 (the last)", got.timeout)
	}

	// The elements refreshed down to 2 s really go after ~3 s.
	time.Sleep(3 * time.Second)
	s4, s6 := nftSet(t, ns, "dialtrap", "blocklist4"), nftSet(t, ns, "dialtrap", "blocklist6")
	if _, ok := s4["192.0.2.10"]; ok {
		t.Error("192.0.2.10 still there 3 s after a refresh to 2 s")
	}
	if _, ok := s6["2001:db8::10"]; ok {
		t.Error("2001:db8::10 still there 3 s after a refresh to 2 s")
	}
	if _, ok := s4["192.0.2.12"]; !ok {
		t.Error("192.0.2.12 (made permanent) is gone")
	}
}

func TestNFTDelete(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ensure(t, n)
	ctx := context.Background()
	add(t, n, el("192.0.2.1", time.Hour), el("192.0.2.2", time.Second), el("2001:db8::1", 0), el("192.0.2.3", 0))
	time.Sleep(1500 * time.Millisecond) // 192.0.2.2 expires
	for _, c := range []struct {
		name  string
		addrs []string
	}{
		{"present", []string{"192.0.2.1", "2001:db8::1"}},
		{"absent", []string{"198.51.100.7", "2001:db8::99"}},
		{"expired", []string{"192.0.2.2"}},
		{"deleted twice", []string{"192.0.2.1"}},
		{"mixed", []string{"192.0.2.3", "198.51.100.8", "::ffff:192.0.2.3"}},
		{"none", nil},
	} {
		var addrs []netip.Addr
		for _, a := range c.addrs {
			addrs = append(addrs, netip.MustParseAddr(a))
		}
		if err := n.Delete(ctx, addrs); err != nil {
			t.Errorf("%s: Delete(%v) = %v", c.name, c.addrs, err)
		}
	}
	if s := nftSet(t, ns, "dialtrap", "blocklist4"); len(s) != 0 {
		t.Errorf("v4 set not empty: %v", s)
	}
	checkLen(t, n, 0, 0)
}

// 1,000 addresses at once, of which some are in the set, some were and expired meanwhile, and
// the rest are new.
func TestNFTAddMixed1000(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ensure(t, n)
	addrs := make([]netip.Addr, 1000)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		} else {
			addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
	}
	var first []Element
	for i, a := range addrs {
		switch i % 3 {
		case 0: // stays
			first = append(first, Element{a, time.Hour})
		case 1: // expires before the second Add
			first = append(first, Element{a, time.Second})
		}
	}
	add(t, n, first...)
	time.Sleep(1500 * time.Millisecond)
	var all []Element
	for _, a := range addrs {
		all = append(all, Element{a, 10 * time.Minute})
	}
	before := n.flushes
	add(t, n, all...)
	if got := n.flushes - before; got != 1 {
		t.Errorf("Add of 1,000 took %d transactions, want 1", got)
	}
	checkLen(t, n, 500, 500)
	for _, e := range nftSet(t, ns, "dialtrap", "blocklist6") {
		if e.timeout != 600 {
			t.Fatalf("an element has timeout %d s, want 600", e.timeout)
		}
	}
}

func manyAddrs(n4, n6 int) []Element {
	els := make([]Element, 0, n4+n6)
	for i := range n4 {
		els = append(els, Element{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), time.Hour + time.Duration(i%60)*time.Second})
	}
	for i := range n6 {
		els = append(els, Element{netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}), time.Hour})
	}
	return els
}

// 100,000 IPv4 and 30,000 IPv6 elements in one Add, then refreshed, then deleted: in 1 MiB
// transactions (the default), in one transaction, and in many small ones.
func TestNFTLarge(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		txMax  int
		n4, n6 int
		txs    int // transactions of the first Add: 1, or 0 for more than 1
	}{
		{"default", 0, 100000, 30000, 0},
		{"one transaction", 16 << 20, 100000, 30000, 1},
		{"256 KiB transactions", 256 << 10, 20000, 10000, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			n, ns := newTestNFT(t, NFTOptions{MaxTransactionBytes: c.txMax})
			ensure(t, n)
			els := manyAddrs(c.n4, c.n6)
			start, before := time.Now(), n.flushes
			add(t, n, els...)
			t.Logf("Add of %d elements into empty sets: %v, %d transactions", len(els), time.Since(start), n.flushes-before)
			if got := n.flushes - before; (c.txs == 1) != (got == 1) {
				t.Errorf("%d transactions, want %v", got, map[int]string{0: "more than 1", 1: "1"}[c.txs])
			}
			checkLen(t, n, c.n4, c.n6)
			start = time.Now()
			add(t, n, els...)
			t.Logf("refresh of %d elements: %v", len(els), time.Since(start))
			checkLen(t, n, c.n4, c.n6)
			if got := strings.Count(ns.run(t, "nft", "list", "set", "inet", "dialtrap", "blocklist6"), "2001:db8::"); got != c.n6 {
				t.Errorf("nft lists %d IPv6 elements, want %d", got, c.n6)
			}
			addrs := make([]netip.Addr, 0, len(els))
			for _, e := range els {
				addrs = append(addrs, e.Addr)
			}
			if err := n.Delete(context.Background(), addrs); err != nil {
				t.Fatal(err)
			}
			checkLen(t, n, 0, 0)
		})
	}
}

// The rule drops: a datagram from an address in the set does not arrive, and the rule's
// counter counts it; after Delete it arrives again.
func TestNFTDropRuleDrops(t *testing.T) {
	t.Parallel()
	n, host := newTestNFT(t, NFTOptions{})
	scanner := newNetns(t)
	veth(t, host, scanner, "10.99.0.1", "10.99.0.2", "fd00:99::1", "fd00:99::2")
	ensure(t, n)
	for _, c := range []struct {
		network, host, scanner, set string
	}{
		{"udp4", "10.99.0.1", "10.99.0.2", "blocklist4"},
		{"udp6", "fd00:99::1", "fd00:99::2", "blocklist6"},
	} {
		t.Run(c.network, func(t *testing.T) {
			var in, out *net.UDPConn
			host.inside(t, func() (err error) {
				in, err = net.ListenUDP(c.network, &net.UDPAddr{IP: net.ParseIP(c.host), Port: 5060})
				return err
			})
			defer in.Close()
			scanner.inside(t, func() (err error) {
				out, err = net.DialUDP(c.network, nil, &net.UDPAddr{IP: net.ParseIP(c.host), Port: 5060})
				return err
			})
			defer out.Close()
			send := func(msg string) {
				if _, err := out.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
			}

			send("OPTIONS 1")
			if got, ok := recvWithin(in, 3*time.Second); !ok || got != "OPTIONS 1" {
				t.Fatalf("before blocking: got %q, %v", got, ok)
			}
			add(t, n, el(c.scanner, time.Minute))
			send("OPTIONS 2")
			if got, ok := recvWithin(in, 500*time.Millisecond); ok {
				t.Fatalf("blocked source got through: %q", got)
			}
			if got := dropCounters(t, host, "dialtrap", "input")[c.set]; got < 1 {
				t.Errorf("counter of the %s rule = %d, want >= 1", c.set, got)
			}
			if err := n.Delete(context.Background(), []netip.Addr{netip.MustParseAddr(c.scanner)}); err != nil {
				t.Fatal(err)
			}
			send("OPTIONS 3")
			if got, ok := recvWithin(in, 3*time.Second); !ok || got != "OPTIONS 3" {
				t.Fatalf("after Delete: got %q, %v", got, ok)
			}
		})
	}
}

func TestNFTRemove(t *testing.T) {
	t.Parallel()
	n, ns := newTestNFT(t, NFTOptions{})
	ctx := context.Background()
	if err := n.Remove(ctx); err != nil {
		t.Fatalf("Remove before Ensure: %v", err)
	}
	ensure(t, n)
	add(t, n, el("192.0.2.1", time.Hour))
	if err := n.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if rs := ns.run(t, "nft", "list", "ruleset"); strings.TrimSpace(rs) != "" {
		t.Fatalf("ruleset after Remove:\n%s", rs)
	}
	if err := n.Remove(ctx); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	ensure(t, n)
	checkLen(t, n, 0, 0)
}

func TestNFTErrors(t *testing.T) {
	t.Parallel()
	n, _ := newTestNFT(t, NFTOptions{})
	ctx := context.Background()

	// Before Ensure (or after 'nft flush ruleset'): the sets are missing.
	err := n.Add(ctx, []Element{el("192.0.2.1", time.Hour)})
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, ErrMissing) {
		t.Errorf("Add without sets: %v", err)
	}
	if _, _, err := n.Len(ctx); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Len without sets: %v", err)
	}
	// The connection works after an error.
	ensure(t, n)
	add(t, n, el("192.0.2.1", time.Hour))

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := n.Add(cctx, []Element{el("192.0.2.2", time.Hour)}); !errors.Is(err, context.Canceled) {
		t.Errorf("Add with a cancelled context: %v", err)
	}
	checkLen(t, n, 1, 0)

	if _, err := NewNFT(NFTOptions{Set4: "x", Set6: "x"}); err == nil {
		t.Error("same name for both sets accepted")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Add(ctx, []Element{el("192.0.2.3", 0)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}

// Ensure over objects of the same names that are something else says what to delete.
func TestNFTEnsureConflicts(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, setup, want string
	}{
		{"set of another type", "add table inet dialtrap; add set inet dialtrap blocklist4 { type ipv6_addr; }",
			"delete it, e.g. 'nft delete table inet dialtrap'"},
		{"set without timeouts", "add table inet dialtrap; add set inet dialtrap blocklist6 { type ipv6_addr; }",
			"exists with another definition"},
		{"chain at another hook", "add table inet dialtrap; add chain inet dialtrap input { type filter hook output priority 0; }",
			"the chain input exists with another type, hook or priority"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			n, ns := newTestNFT(t, NFTOptions{})
			ns.run(t, "nft", c.setup)
			err := n.Ensure(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Ensure = %v, want an error saying %q", err, c.want)
			}
			ns.run(t, "nft", "delete", "table", "inet", "dialtrap")
			ensure(t, n)
		})
	}
}

func TestExplainPermission(t *testing.T) {
	n := &NFT{o: NFTOptions{Table: "dialtrap"}}
	err := n.explain("add", fmt.Errorf("conn.Receive: %w", &net.OpError{Op: "receive", Err: unix.EPERM}))
	if !strings.Contains(err.Error(), "needs CAP_NET_ADMIN") || !errors.Is(err, fs.ErrPermission) {
		t.Fatal(err)
	}
}

// Check tells a set that is there from one a firewall reload flushed away.
func TestNFTCheck(t *testing.T) {
	ns := newNetns(t)
	n, err := NewNFT(NFTOptions{NetNS: ns.fd()})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	if err := n.Check(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("before Ensure: %v, want ErrMissing", err)
	}
	if err := n.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Check(ctx); err != nil {
		t.Errorf("after Ensure: %v", err)
	}
	ns.run(t, "nft", "flush", "table", "inet", "dialtrap") // the rules go, the sets stay
	if err := n.Check(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("after nft flush table: %v, want ErrMissing", err)
	}
	if err := n.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	ns.run(t, "nft", "flush", "ruleset")
	if err := n.Check(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("after nft flush ruleset: %v, want ErrMissing", err)
	}
}
