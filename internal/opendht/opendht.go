// Package opendht bridges dialtrap to the reference product's OpenDHT network, where its
// nodes share bad actors under one well-known key. What arrives there is signed by nobody,
// so every value is untrusted: it is checked like a libp2p peer's event, counted, rate
// limited and held by the trust gate, and it enters the node as a peer event whose
// provenance is "opendht". With Publish the node puts its own shareable events there, in the
// reference's 13-key JSON.
//
// The DHT itself is the C library libopendht-c (GPL-3), linked only in a binary built with
// -tags opendht (cgo); the default build stays static and pure Go, and Open fails in it.
package opendht

import "errors"

// ErrNotBuilt is what --opendht gets from a binary built without -tags opendht.
var ErrNotBuilt = errors.New("this binary was built without OpenDHT support: build it with -tags opendht (cgo and Debian's libopendht-c-dev; see docs/opendht.md), or leave --opendht off")

// Key is the name the reference product's nodes share bad actors under; KeyHash is its
// InfoHash, the SHA-1 of the name, as OpenDHT hashes key names.
const (
	Key     = "bad_actors"
	KeyHash = "14d30143330e2e0e922ed4028a60ff96a59800ad"
)

// Provenance is the peer name events from OpenDHT carry in the store (Event.Peer): one
// source for all of them, since their node ids are whatever their writers chose.
const Provenance = "opendht"

// DefaultPort is the reference's OpenDHT port (UDP).
const DefaultPort = 4222

// DefaultRate is --opendht-rate's default: events a second all of OpenDHT may bring. A
// value costs its writer nothing and nobody answers for it, so the bound is low.
const DefaultRate = 10

// MaxValue bounds a value: OpenDHT's own limit, 64 KiB.
const MaxValue = 64 << 10

// DHT is an OpenDHT node as the bridge uses it; Open makes one in a binary built with
// -tags opendht.
type DHT interface {
	// Listen calls fn with each value put under Key, from the DHT's own thread.
	Listen(fn func([]byte))
	// Put stores a value under Key.
	Put(data []byte)
	NodeID() string
	Port() int
	// Nodes is the routing table's size.
	Nodes() int
	// Puts says how many puts the network confirmed and how many failed.
	Puts() (ok, failed uint64)
	Close()
}
