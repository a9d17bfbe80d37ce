//go:build nop2p

// Built with -tags nop2p, for small devices that only capture: the node has no peer
// network, and the binary links no libp2p code (no DHT, gossipsub, QUIC or WebRTC), which
// makes it markedly smaller and lighter at rest (see docs/nop2p.md). -p/--p2p and
// -b/--bootstrap, from the command line, the environment or the config file, are refused
// at start-up as a configuration error (exit status 2). Capture, the store, the API (/peers
// answers 404, as on a node without -p), `dialtrap peers` against another node, block, BGP
// and the policy agent work as in the default build, whose counterpart is p2p_libp2p.go.

package node

import (
	"errors"
	"fmt"

	"github.com/dialtrap/dialtrap/internal/config"
)

// P2PBuilt reports whether this binary can join the peer-to-peer network (-p): false, it
// was built with -tags nop2p.
const P2PBuilt = false

// errNoP2P is the answer to -p or -b in a binary built without peer-to-peer support.
var errNoP2P = errors.New("this binary was built without peer-to-peer support (built with -tags nop2p): " +
	"use the default build of dialtrap to share events with peers")

// CheckP2P refuses what this build cannot do: -p and -b (New calls it too). The command
// calls it before anything else, so that the refusal is all an operator reads: notices
// about the other peer-to-peer options would only distract.
func CheckP2P(cfg *config.Config) error {
	switch {
	case cfg.P2P:
		return fmt.Errorf("-p/--p2p: %w, or turn it off (command line, DIALTRAP_P2P, p2p in the config file)", errNoP2P)
	case len(cfg.Bootstrap) > 0:
		return fmt.Errorf("-b/--bootstrap: %w, or remove it (command line, DIALTRAP_BOOTSTRAP, bootstrap in the config file)", errNoP2P)
	}
	return nil
}

// newPeerNetwork is never reached: New refused -p.
func (n *Node) newPeerNetwork() (peerNetwork, error) {
	return nil, fmt.Errorf("-p/--p2p: %w", errNoP2P)
}
