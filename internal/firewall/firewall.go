// Package firewall keeps a kernel set of blocked source addresses in step with a block list:
// the part of the firewall agent ("dialtrap block") that touches the kernel.
//
// Three implementations of Set:
//
//   - NFT drives nftables over netlink (github.com/google/nftables): a table of its own
//     (inet dialtrap), a set per address family with per-element timeouts, and by default an
//     input chain that drops what comes from them. One netlink transaction per call (up to
//     about 16,000 elements; larger calls take several).
//   - IPSet drives `ipset restore` (one process per call, fed on stdin). It only manages the
//     two sets; the operator references them from their own iptables rules
//     (-m set --match-set).
//   - NewDryRun prints each change and touches nothing.
//
// Addresses are normalised before use: an IPv4-mapped IPv6 address (::ffff:192.0.2.1) is
// treated as the IPv4 address, and an IPv6 zone is dropped. IPv4 addresses go to the IPv4
// set, IPv6 addresses to the IPv6 set.
package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Element is one blocked address and how long it stays blocked.
type Element struct {
	Addr netip.Addr
	// Timeout is the time the element stays in the set, counted from the Add that put it
	// there; 0 means no timeout (permanent). NFT rounds it up to a whole millisecond,
	// IPSet up to a whole second (and caps it at ipset's maximum, MaxIPSetTimeout).
	Timeout time.Duration
}

// Set is a kernel set of blocked source addresses, one for IPv4 and one for IPv6.
//
// The methods are safe for concurrent use; calls are carried out one at a time. When ctx
// ends during a call, the call returns its error, but the change may or may not have been
// made: the caller should repeat it (every method is idempotent).
type Set interface {
	// Ensure creates the table/sets (and, for nft, the drop chain) if missing. It never
	// removes or flushes elements already there (they survive agent restarts).
	Ensure(ctx context.Context) error
	// Add puts every element in the set with the given timeout, replacing the timeout of an
	// element already present (refresh). IPv4 and IPv6 go to their own sets. If the same
	// address is given more than once, the last one counts.
	Add(ctx context.Context, els []Element) error
	// Delete removes the addresses; one that is absent (e.g. already expired by its timeout)
	// is not an error.
	Delete(ctx context.Context, addrs []netip.Addr) error
	// Check reports whether the sets still exist: nil if so, an error wrapping ErrMissing
	// if a firewall reload or someone else removed them. Cheap: no element is read.
	Check(ctx context.Context) error
	// Len counts elements in the v4 and v6 sets (not those whose timeout has passed).
	Len(ctx context.Context) (v4, v6 int, err error)
	// Remove deletes what Ensure created (the table / the ipsets); used for --flush-on-exit.
	// What is already gone is not an error.
	Remove(ctx context.Context) error
	// Close releases the connection; it leaves the kernel's sets as they are.
	Close() error
}

// ErrMissing is wrapped in the error of a change to a set that is gone (a firewall reload, or
// someone deleted it): Ensure makes it again, empty.
var ErrMissing = errors.New("the set is missing")

// ErrClosed is returned by the methods of a Set after Close.
var ErrClosed = errors.New("firewall: set is closed")

// capNetAdmin is the advice for a permission error, from netlink or from ipset.
const capNetAdmin = "needs CAP_NET_ADMIN: run as root or give the binary cap_net_admin (setcap cap_net_admin+ep BINARY, or AmbientCapabilities=CAP_NET_ADMIN in a systemd unit)"

// normAddr returns a's canonical form (IPv4-mapped IPv6 unmapped, zone dropped), or an error
// for the zero Addr.
func normAddr(a netip.Addr) (netip.Addr, error) {
	if !a.IsValid() {
		return netip.Addr{}, errors.New("firewall: invalid (zero) address")
	}
	return a.Unmap().WithZone(""), nil
}

// split normalises and de-duplicates els (the last of an address counts) into IPv4 and IPv6
// elements, in their first order.
func split(els []Element) (v4, v6 []Element, err error) {
	index := make(map[netip.Addr]int, len(els))
	for _, e := range els {
		a, err := normAddr(e.Addr)
		if err != nil {
			return nil, nil, err
		}
		if e.Timeout < 0 {
			return nil, nil, fmt.Errorf("firewall: %v: negative timeout %v", a, e.Timeout)
		}
		e.Addr = a
		if i, ok := index[a]; ok {
			if a.Is4() {
				v4[i] = e
			} else {
				v6[i] = e
			}
			continue
		}
		if a.Is4() {
			index[a] = len(v4)
			v4 = append(v4, e)
		} else {
			index[a] = len(v6)
			v6 = append(v6, e)
		}
	}
	return v4, v6, nil
}

// splitAddrs is split for Delete.
func splitAddrs(addrs []netip.Addr) (v4, v6 []netip.Addr, err error) {
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		a, err := normAddr(a)
		if err != nil {
			return nil, nil, err
		}
		if seen[a] {
			continue
		}
		seen[a] = true
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6, nil
}
