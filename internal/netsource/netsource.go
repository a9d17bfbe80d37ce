// Package netsource holds the one rule of which addresses count as one source, for every
// per-source limit (SIP connections and replies, API connections and streams): an IPv4
// address, or an IPv6 /64, which one subscriber gets whole and can rotate through at will.
package netsource

import "net/netip"

// Of returns the source a is part of. An IPv4-mapped IPv6 address is its IPv4 address.
func Of(a netip.Addr) netip.Prefix {
	a = a.Unmap().WithZone("")
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}
