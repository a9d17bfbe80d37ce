//go:build !nop2p

// This file and p2p_nop2p.go are the node's only link to libp2p: here the default build
// makes its peer network (internal/peer). A binary built with -tags nop2p takes
// p2p_nop2p.go instead, refuses -p and -b, and links no libp2p code at all (no DHT,
// gossipsub, QUIC or WebRTC), for small devices that only capture. Everything else in the
// package sees the network through the peerNetwork interface and peerinfo's types.

package node

import (
	"context"
	"fmt"

	libpeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/dialtrap/dialtrap/internal/api"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/peer"
	"github.com/dialtrap/dialtrap/internal/store"
)

// P2PBuilt reports whether this binary can join the peer-to-peer network (-p): true unless
// it was built with -tags nop2p.
const P2PBuilt = true

// CheckP2P checks the peer-to-peer options that New can check without side effects.
func CheckP2P(cfg *config.Config) error {
	if !cfg.P2P {
		return nil
	}
	if _, err := peer.ParseIDs(cfg.P2PTrust); err != nil {
		return fmt.Errorf("--p2p-trust: %w", err)
	}
	// Malformed addresses are usage errors (exit 2), found before anything starts.
	if _, err := peer.ParseBootstrap(cfg.Bootstrap); err != nil {
		return fmt.Errorf("-b/--bootstrap: %w", err)
	}
	for _, a := range cfg.P2PAddr {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("--p2p-addr %q is not a multiaddr (e.g. /ip4/0.0.0.0/tcp/4222): %w", a, err)
		}
	}
	return nil
}

// newPeerNetwork makes (does not start) the node's libp2p peer: its key from the data
// directory, catch-up served from the store, and peer events into the hub. It runs once the
// store and the hub exist.
func (n *Node) newPeerNetwork() (peerNetwork, error) {
	cfg := &n.cfg
	key, err := peer.LoadKey(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	trusted, _ := peer.ParseIDs(cfg.P2PTrust) // checked by New
	return libp2pNetwork{peer.New(peer.Config{
		Key: key, ListenAddrs: cfg.P2PAddr, Bootstrap: cfg.Bootstrap, Log: n.log,
		PerPeerRate: cfg.P2PRate, PerPeerBurst: max(int(cfg.P2PRate*10), 1),
		Policy: peer.Policy{Trusted: trusted, MinSightings: cfg.P2PMinSightings,
			Known: func(ip, number string) bool { return known(context.Background(), n.store, ip, number) }},
		CatchupWindow: cfg.P2PCatchup,
		Events:        n.store,
		Share:         Shareable(cfg, n.guards),
		// Peer events go through the hub like captured ones; routes decide which sinks get
		// them.
		Receive: func(e *event.Event, _ libpeer.ID) { n.hub.Publish(e) },
	})}, nil
}

// libp2pNetwork is peer.Node as a peerNetwork: its peer ID as a string.
type libp2pNetwork struct{ *peer.Node }

func (l libp2pNetwork) ID() string { return l.Node.ID().String() }

// known reports whether the store holds ip or number from a sighting that vouches for it:
// this node's, a trusted peer's, or one with a proven source (what libp2p peers share). A
// peer's report of it then counts at once. OpenDHT's reports are none of these: an unsigned
// value must not open the gate for a libp2p peer's report.
func known(ctx context.Context, st api.Lookups, ip, number string) bool {
	return knownBy(ctx, st, ip, number, func(a store.Aggregate) bool {
		return a.Local > 0 || a.TrustedPeers > 0 || a.Verified > 0
	})
}
