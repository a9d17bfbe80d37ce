package bgp

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// ParseNeighbor reads a --bgp-neighbor value: an address followed by words, BIRD-like,
//
//	ADDRESS as ASN [port N] [password-file PATH] [ttl-security] [multihop N] [passive] [local ADDRESS]
//
// Words, not commas, separate the settings, so that a list of neighbours stays a plain
// comma-separated list in flags, environment variables and the TOML file. A password is read
// from a file so that it shows neither in ps nor in the environment.
func ParseNeighbor(s string) (Neighbor, error) {
	var n Neighbor
	f := strings.Fields(s)
	if len(f) == 0 {
		return n, fmt.Errorf("--bgp-neighbor %q: give \"ADDRESS as ASN\"", s)
	}
	bad := func(format string, a ...any) (Neighbor, error) {
		return Neighbor{}, fmt.Errorf("--bgp-neighbor %q: "+format, append([]any{s}, a...)...)
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil || a.Zone() != "" {
		return bad("%q is not an IP address", f[0])
	}
	n.Address = a.Unmap()
	for i := 1; i < len(f); i++ {
		word := f[i]
		arg := func() (string, bool) {
			if i+1 >= len(f) {
				return "", false
			}
			i++
			return f[i], true
		}
		switch word {
		case "as":
			v, ok := arg()
			asn, err := strconv.ParseUint(v, 10, 32)
			if !ok || err != nil || asn == 0 {
				return bad("as needs an AS number from 1 to 4294967295")
			}
			n.ASN = uint32(asn)
		case "port":
			v, ok := arg()
			p, err := strconv.ParseUint(v, 10, 16)
			if !ok || err != nil || p == 0 {
				return bad("port needs a number from 1 to 65535")
			}
			n.Port = uint16(p)
		case "multihop":
			v, ok := arg()
			h, err := strconv.ParseUint(v, 10, 8)
			if !ok || err != nil || h < 1 {
				return bad("multihop needs a TTL from 1 to 255")
			}
			n.Multihop = uint8(h)
		case "password-file":
			v, ok := arg()
			if !ok {
				return bad("password-file needs a path")
			}
			b, err := os.ReadFile(v)
			if err != nil {
				return bad("read the password: %v", err)
			}
			n.Password = strings.TrimSpace(string(b))
			if n.Password == "" || len(n.Password) > 80 {
				return bad("the password in %s must be 1 to 80 characters (TCP MD5 keys are at most 80)", v)
			}
		case "local":
			v, ok := arg()
			la, err := netip.ParseAddr(v)
			if !ok || err != nil || la.Zone() != "" {
				return bad("local needs an IP address")
			}
			n.LocalAddr = la.Unmap()
		case "ttl-security":
			n.TTLSecurity = true
		case "passive":
			n.Passive = true
		default:
			return bad("unknown word %q (known: as, port, password-file, ttl-security, multihop, passive, local)", word)
		}
	}
	if n.ASN == 0 {
		return bad("give the router's AS number: \"%s as ASN\"", f[0])
	}
	if n.TTLSecurity && n.Multihop > 0 {
		return bad("ttl-security and multihop exclude each other")
	}
	return n, nil
}

// ParseNextHops reads --bgp-next-hop values: at most one IPv4 and one IPv6 address; the
// family not given keeps its default.
func ParseNextHops(vals []string) (v4, v6 netip.Addr, err error) {
	v4, v6 = DefaultNextHop4, DefaultNextHop6
	seen4, seen6 := false, false
	for _, s := range vals {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			return v4, v6, fmt.Errorf("--bgp-next-hop %q: give an IPv4 or IPv6 address", s)
		}
		a = a.Unmap()
		if a.Is4() {
			if seen4 {
				return v4, v6, fmt.Errorf("--bgp-next-hop: two IPv4 next hops (%s, %s): give one", v4, a)
			}
			v4, seen4 = a, true
		} else {
			if seen6 {
				return v4, v6, fmt.Errorf("--bgp-next-hop: two IPv6 next hops (%s, %s): give one", v6, a)
			}
			v6, seen6 = a, true
		}
	}
	return v4, v6, nil
}
