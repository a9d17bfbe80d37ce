// Package feed turns the store's aggregates into blocklists a firewall or a PBX can load:
// plain lists, ipset and nftables scripts, JSON and CSV, and a change stream that an agent
// follows (see Serve). It also holds the never-block lists: addresses and numbers that are
// recorded but must never reach a feed, a firewall set or a peer, whatever the evidence.
package feed

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultNeverBlock are the ranges no blocklist should ever hold: a forged or misrouted
// packet from them says nothing about an attacker, and blocking them cuts off the host itself
// or its own networks. The node adds its own addresses.
var DefaultNeverBlock = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
	"192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
	"203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	// IPv6 forms that carry an IPv4 address (IPv4-compatible, NAT64, 6to4) and so stand for
	// a translator or relay, not the host behind it.
	"::/96", "64:ff9b::/96", "2002::/16",
	"::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "3fff::/20",
	"fc00::/7", "fe80::/10", "ff00::/8",
}

// IPGuard holds the addresses never to block. The zero value protects nothing. Add and
// AddAddr may be called until the first check; checks are safe for concurrent use.
type IPGuard struct {
	mu       sync.Mutex
	prefixes []netip.Prefix
	// ranges are the prefixes as sorted, merged [first, last] ranges, made at the first check
	// after a change: a check is a binary search, whatever the length of the list.
	ranges atomic.Pointer[[]addrRange]
}

type addrRange struct{ first, last netip.Addr }

// NewIPGuard reads entries: addresses, CIDR prefixes, or paths of files holding them (one a
// line; # starts a comment). defaults adds DefaultNeverBlock.
func NewIPGuard(entries []string, defaults bool) (*IPGuard, error) {
	g := &IPGuard{}
	if defaults {
		for _, s := range DefaultNeverBlock {
			g.Add(netip.MustParsePrefix(s))
		}
	}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if p, ok := ParsePrefix(e); ok {
			g.Add(p)
			continue
		}
		if err := g.addFile(e); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// ParsePrefix reads an address (as its host prefix, IPv4-mapped unmapped, zone dropped) or a
// CIDR prefix (masked).
func ParsePrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		a = a.Unmap().WithZone("")
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func (g *IPGuard) addFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("never-block entry %q is neither an address, a CIDR prefix nor a readable file: %w", path, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		s, _, _ := strings.Cut(sc.Text(), "#")
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, ok := ParsePrefix(s)
		if !ok {
			return fmt.Errorf("never-block file %s line %d: %q is not an address or CIDR prefix", path, line, s)
		}
		g.Add(p)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read never-block file %s: %w", path, err)
	}
	return nil
}

// Add protects a prefix (an IPv4-mapped IPv6 prefix protects the IPv4 one too).
func (g *IPGuard) Add(p netip.Prefix) {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.prefixes = append(g.prefixes, p)
	g.ranges.Store(nil)
}

// Replace makes g protect what from protects, at once for every reader of g (a reload of
// the never-block list while it is in use).
func (g *IPGuard) Replace(from *IPGuard) {
	from.mu.Lock()
	ps := slices.Clone(from.prefixes)
	from.mu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.prefixes = ps
	g.ranges.Store(nil)
}

// AddAddr protects one address.
func (g *IPGuard) AddAddr(a netip.Addr) {
	a = a.Unmap().WithZone("")
	g.Add(netip.PrefixFrom(a, a.BitLen()))
}

// AddHostAddrs protects every address of this host's interfaces: a probe forged with the
// host's own address must not make it block itself.
func (g *IPGuard) AddHostAddrs() error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list this host's addresses to keep them off blocklists (name them with --never-block): %w", err)
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok {
				g.AddAddr(ip)
			}
		}
	}
	return nil
}

// compiled returns the merged ranges, making them after a change.
func (g *IPGuard) compiled() []addrRange {
	if r := g.ranges.Load(); r != nil {
		return *r
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	rs := make([]addrRange, 0, len(g.prefixes))
	for _, p := range g.prefixes {
		rs = append(rs, addrRange{p.Addr(), lastOf(p)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.first.Compare(b.first) })
	merged := rs[:0]
	for _, r := range rs {
		if n := len(merged); n > 0 && merged[n-1].first.BitLen() == r.first.BitLen() &&
			(r.first.Compare(merged[n-1].last) <= 0 || merged[n-1].last.Next() == r.first) {
			if r.last.Compare(merged[n-1].last) > 0 {
				merged[n-1].last = r.last
			}
			continue
		}
		merged = append(merged, r)
	}
	g.ranges.Store(&merged)
	return merged
}

// lastOf is the last address of a prefix.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Protects reports whether a is never to be blocked.
func (g *IPGuard) Protects(a netip.Addr) bool {
	if g == nil {
		return false
	}
	a = a.Unmap().WithZone("")
	rs := g.compiled()
	// The last range starting at or before a holds it, if any does (ranges do not overlap).
	i, _ := slices.BinarySearchFunc(rs, a, func(r addrRange, a netip.Addr) int {
		if c := r.first.Compare(a); c != 0 {
			return c
		}
		return -1 // equal starts sort before a, so i points past them
	})
	return i > 0 && rs[i-1].first.BitLen() == a.BitLen() && a.Compare(rs[i-1].last) <= 0
}

// ProtectsString is Protects for a stored address; anything that does not parse is
// protected (it cannot be a firewall element anyway).
func (g *IPGuard) ProtectsString(s string) bool {
	a, err := netip.ParseAddr(s)
	return err != nil || g.Protects(a)
}

// EmergencyNumbers are never in a number feed, as whole numbers: an outbound blocklist that
// held one could stop a call for help.
var EmergencyNumbers = []string{"112", "911", "999", "000", "110", "119", "100", "101", "102", "108", "118", "08", "061", "062", "063", "065", "15", "17", "18"}

// MinFeedDigits is the fewest digits a number in a feed has: shorter ones are extensions,
// service and emergency codes (9-911 too), which a PBX's outbound blocklist must never hold.
// It is the national match's threshold as well.
const MinFeedDigits = 6

// NumberGuard holds the numbers never to put in a number feed.
type NumberGuard struct {
	exact    map[string]struct{}
	prefixes []string
}

// NewNumberGuard takes numbers ("+4420...", or digits) and prefixes written with a trailing
// "*"; emergency numbers are always in.
func NewNumberGuard(entries []string) (*NumberGuard, error) {
	g := &NumberGuard{exact: map[string]struct{}{}}
	for _, n := range EmergencyNumbers {
		g.exact[n] = struct{}{}
	}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		pre, isPrefix := strings.CutSuffix(e, "*")
		d := strings.TrimPrefix(pre, "+")
		if d == "" || strings.Trim(d, "0123456789") != "" {
			return nil, fmt.Errorf("never-block number %q: write digits, optionally after + and before a final * for a prefix", e)
		}
		if isPrefix {
			g.prefixes = append(g.prefixes, d)
		} else {
			g.exact[d] = struct{}{}
		}
	}
	return g, nil
}

// Protects reports whether n must stay out of number feeds: anything that is not a plain
// number, a short number, an emergency number, or one on the operator's list.
func (g *NumberGuard) Protects(n string) bool {
	d := strings.TrimPrefix(n, "+")
	if d == "" || strings.Trim(d, "0123456789") != "" || len(d) < MinFeedDigits {
		return true
	}
	if g == nil {
		return false
	}
	if _, ok := g.exact[d]; ok {
		return true
	}
	for _, p := range g.prefixes {
		if strings.HasPrefix(d, p) {
			return true
		}
	}
	return false
}
